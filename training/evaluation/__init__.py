"""How a model is measured: retrieval metrics, embedding a manifest, reports."""
