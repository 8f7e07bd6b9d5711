"""Chat sessions: the domain, the active-session stores, the service and its HTTP edges."""
