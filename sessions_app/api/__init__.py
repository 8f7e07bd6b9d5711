"""HTTP edges of the session app: DRF views for CRUD, a Channels consumer for turns."""
