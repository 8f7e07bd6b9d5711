"""OpenAI's API under `/v1/`: Conversations, Responses and Chat Completions over the gateway's sessions."""
