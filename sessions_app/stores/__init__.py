"""Adapters of the active store's ports (`ActiveSessionStore`, `ArchiverSessionStore`)."""
