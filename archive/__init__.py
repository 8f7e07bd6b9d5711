"""Archived sessions: the Blob and filesystem archive stores, retention and erasure (to come)."""
