"""Settings by environment: `local` (the default), `test` and `production`, all from environment variables."""
