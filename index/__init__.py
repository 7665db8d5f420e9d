"""Embedding a corpus into a FAISS index directory."""
