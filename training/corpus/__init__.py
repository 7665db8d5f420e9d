"""The bundled demo corpus: real soundfont samples rendered into clips with parallel captions."""
