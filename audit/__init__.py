"""The audit trail: who did what to which session or owner, never content. Its one writer is
audit.services (`audit`, and `audit_sync` inside a transaction); the admin shows it read-only."""
