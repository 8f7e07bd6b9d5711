"""The Responses API: `POST /v1/responses`, its records, and reading and deleting them."""
