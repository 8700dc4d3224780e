"""Clients of masqd's control API."""
