"""ATRI: multilingual audio-text retrieval (train, measure, serve)."""

__version__ = "0.1.0"
