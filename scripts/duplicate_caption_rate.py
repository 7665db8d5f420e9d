"""How often two clips of one training batch share a caption string: the pairs
`--mask-duplicate-captions` takes out of the negatives. Draws the strategy's seeded epoch
plans exactly as `atri train` does and counts, per global batch, the pairs of items that
hold an equal caption (in any slot). With `--mask-same KEYS`, the pairs that option takes
out instead: items whose clips share the manifest `meta` values under KEYS.

    python scripts/duplicate_caption_rate.py data/sfx-final-v5-80-seed1/joint-r1/train.jsonl \
        --strategy kcl-balanced --batch-size 24 --seed 1 --epochs 3 [--mask-same concept]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from atri.training.batches import clip_groups
from atri.training.data.manifest import read_manifest
from atri.training.languages import LANGS
from atri.training.objectives.sampling import CaptionTable
from atri.training.objectives.strategies import draw_epoch


def batch_pairs(captions: list[set[str]]) -> int:
    """Pairs of items whose caption sets intersect."""
    return sum(bool(a & b) for i, a in enumerate(captions) for b in captions[i + 1:])


def group_pairs(groups: np.ndarray) -> int:
    """Pairs of items of one group (>= 0; -1: no group)."""
    counts = np.bincount(groups[groups >= 0])
    return int((counts * (counts - 1) // 2).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--strategy", default="kcl-balanced")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--langs", default=",".join(LANGS))
    parser.add_argument("--mask-same", metavar="KEYS",
                        help="count pairs of one meta group (atri train --mask-same) instead")
    args = parser.parse_args(argv)
    langs = tuple(args.langs.split(","))
    manifest = read_manifest(args.manifest)
    table = CaptionTable.from_manifest(manifest, langs)
    groups = clip_groups(manifest, args.mask_same) if args.mask_same else None
    pairs = []
    for epoch in range(args.epochs):
        plan = draw_epoch(args.strategy, table, seed=args.seed, epoch=epoch)
        for b in range(plan.n_batches(args.batch_size)):
            batch = plan.batch(b, args.batch_size)
            if groups is not None:
                pairs.append(group_pairs(groups[batch.clip]))
                continue
            held = [{manifest.records[c].captions[langs[k]][j] for k in row if k >= 0}
                    for c, j, row in zip(batch.clip, batch.caption, batch.lang, strict=True)]
            pairs.append(batch_pairs(held))
    pairs = np.array(pairs)
    result = {"manifest": str(args.manifest), "strategy": args.strategy,
              "batch_size": args.batch_size, "seed": args.seed, "epochs": args.epochs,
              "mask_same": args.mask_same,
              "batches": int(len(pairs)), "batches_with_a_pair": int((pairs > 0).sum()),
              "pairs_per_batch": round(float(pairs.mean()), 4)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
