"""How often two clips of one training batch share a caption string: the pairs
`--mask-duplicate-captions` takes out of the negatives. Draws the strategy's seeded epoch
plans exactly as `atri train` does and counts, per global batch, the pairs of items that
hold an equal caption (in any slot).

    python scripts/duplicate_caption_rate.py data/sfx-final-v5-80-seed1/joint-r1/train.jsonl \
        --strategy kcl-balanced --batch-size 24 --seed 1 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from atri.training.data.manifest import read_manifest
from atri.training.languages import LANGS
from atri.training.objectives.sampling import CaptionTable
from atri.training.objectives.strategies import draw_epoch


def batch_pairs(captions: list[set[str]]) -> int:
    """Pairs of items whose caption sets intersect."""
    return sum(bool(a & b) for i, a in enumerate(captions) for b in captions[i + 1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--strategy", default="kcl-balanced")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--langs", default=",".join(LANGS))
    args = parser.parse_args(argv)
    langs = tuple(args.langs.split(","))
    manifest = read_manifest(args.manifest)
    table = CaptionTable.from_manifest(manifest, langs)
    pairs = []
    for epoch in range(args.epochs):
        plan = draw_epoch(args.strategy, table, seed=args.seed, epoch=epoch)
        for b in range(plan.n_batches(args.batch_size)):
            batch = plan.batch(b, args.batch_size)
            held = [{manifest.records[c].captions[langs[k]][j] for k in row if k >= 0}
                    for c, j, row in zip(batch.clip, batch.caption, batch.lang, strict=True)]
            pairs.append(batch_pairs(held))
    pairs = np.array(pairs)
    result = {"manifest": str(args.manifest), "strategy": args.strategy,
              "batch_size": args.batch_size, "seed": args.seed, "epochs": args.epochs,
              "batches": int(len(pairs)), "batches_with_a_pair": int((pairs > 0).sum()),
              "pairs_per_batch": round(float(pairs.mean()), 4)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
