"""Shared kernel: results, errors, authentication and HTTP plumbing every app may use."""
