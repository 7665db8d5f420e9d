"""The HTTP routes, one file per idea (shared spec api.md)."""
