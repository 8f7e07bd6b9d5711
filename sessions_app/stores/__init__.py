"""Adapters of the `ActiveSessionStore` port."""
