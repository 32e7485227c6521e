"""Tollway: a self-hosted monetization platform for developer tools."""

__version__ = "0.1.0"
