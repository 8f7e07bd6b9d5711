"""Adapters of the `ArchiveSessionStore` port."""
