"""Archived sessions: the Blob and filesystem archive stores with per-owner envelope encryption,
archiving and restoring, retention (purge), an owner's export and erasure, and the scheduler."""
