"""The OpenAI-compatible API under `/v1/`: OpenAI's paths, shapes and errors over the gateway's sessions."""
