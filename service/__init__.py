"""The HTTP search service."""
