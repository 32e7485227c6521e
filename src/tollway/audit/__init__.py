"""Tamper-evident audit log: every money or permission change, chained by SHA-256."""
