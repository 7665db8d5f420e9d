"""Ranks of issue 11's four example queries against a real-recordings split: for each
query, the rank (1-based, among every clip of the split) of the first recording of the
matching concept (and material), with the four best clips shown.

    python scripts/sfx_issue_queries.py --checkpoint default \
        --manifest data/corpus-sfx-v5/test.jsonl

Embeds with the checkpoint as the service does (text queries through the model's text
path, audio through the shared frozen-feature cache). `tests/service/test_real_recordings.py`
checks the same four queries through `/search` on a real index (slow tier).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from atri.training.data.features import default_cache_dir
from atri.training.data.manifest import read_manifest
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.embed import embed_manifest

QUERIES = (  # (query, language, concept, material or None)
    ("dog barking", "eng", "dog_bark", None),
    ("verre brisé", "fra", "glass_break", None),
    ("雷声", "zho", "thunder", None),
    ("Schritte im Schnee", "deu", "footsteps", "snow"),
)


def matches(meta: dict, concept: str, material: str | None) -> bool:
    if meta.get("concept") != concept:
        return False
    return material is None or f"material={material}" in str(meta.get("attrs", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args(argv)
    manifest = read_manifest(args.manifest)
    model, _ = load_checkpoint(args.checkpoint)
    audio = np.asarray(embed_manifest(model, manifest, ["eng"], text=False,
                                      cache_dir=default_cache_dir(os.environ)).audio)
    for query, lang, concept, material in QUERIES:
        with torch.no_grad():
            scores = audio @ model.embed_text([query], lang).numpy()[0]
        order = np.argsort(-scores)
        ranks = [r for r, i in enumerate(order, 1)
                 if matches(manifest.records[i].meta, concept, material)]
        best = [(manifest.records[i].meta.get("concept"), round(float(scores[i]), 3))
                for i in order[:4]]
        print(f"{query}: rank {ranks[0] if ranks else None} of {len(order)}; top 4 {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
