"""ATRI: multilingual audio-text retrieval (train, measure, serve)."""

from importlib.metadata import version

__version__ = version("atri")  # pyproject.toml's, the one place it is written
