"""Talking to model servers: the `ChatBackend` port, its gRPC adapter and the reference server."""
