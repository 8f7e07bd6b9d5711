"""Logs, traces, metrics and health: set up once, carrying ids, sizes, timings and outcomes, never content."""
