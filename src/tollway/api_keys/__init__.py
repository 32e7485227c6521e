"""Prefixed, hashed, scoped API keys."""
