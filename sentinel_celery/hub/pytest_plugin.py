"""Pytest fixtures that start a local GitHub-compatible API (sentinel hub)."""
