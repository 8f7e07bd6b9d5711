"""Per-owner limits shared by every gateway instance: requests and model tokens per minute, and
streams and WebSockets open at once. Other apps use its ports, errors, wiring and memory fake."""
