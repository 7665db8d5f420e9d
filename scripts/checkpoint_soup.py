"""Weight averaging of atri checkpoints fine-tuned from one start ("model soup", Wortsman et
al., ICML 2022; with the start itself as an ingredient, WiSE-FT, Wortsman et al., CVPR 2022):
every trained tensor becomes the weighted mean of the ingredients' tensors.

    python scripts/checkpoint_soup.py --checkpoints data/run-top2-joint-10ep/best \
        data/run-top2-joint-10ep-seed2/best --out data/soup-top2-seeds12

The ingredients must share the model architecture and frozen encoders; they may differ in
how many top aisfx blocks were trained (a checkpoint that kept a block frozen contributes
the packaged block). The soup trains as many blocks as its widest ingredient. BatchNorm
running statistics are averaged like any other tensor. Averaging only makes sense for
models fine-tuned from the same start: it is not checked, the validation score says it.
The soup's checkpoint.json records the ingredients and weights in `training_config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from atri.training.encoders.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

# fields that may differ between ingredients: the widest value is the soup's
FREE_FIELDS = ("audio_trainable_blocks", "audio_dropout")


def average_models(models: list, weights: list[float]):
    """A model with the widest ingredient's config whose every state tensor is the weighted
    mean of the ingredients' (integer buffers, e.g. BatchNorm's batch counter, from the
    first ingredient)."""
    configs = [dataclasses.replace(m.config, **{f: None for f in FREE_FIELDS}) for m in models]
    for i, config in enumerate(configs[1:], 1):
        if config != configs[0]:
            diff = {f.name for f in dataclasses.fields(config)
                    if getattr(config, f.name) != getattr(configs[0], f.name)}
            raise CheckpointError(f"ingredient {i + 1} differs from ingredient 1 in {sorted(diff)}")
    widest = max(models, key=lambda m: m.config.audio_trainable_blocks)
    states = [m.state_dict() for m in models]
    soup = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            soup[key] = first.clone()
            continue
        mean = sum(w * s[key].double() for w, s in zip(weights, states, strict=True))
        soup[key] = mean.to(first.dtype)
    widest.load_state_dict(soup)
    return widest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", required=True,
                        help="atri checkpoint directories (or 'default'), two or more")
    parser.add_argument("--weights", nargs="+", type=float,
                        help="one per checkpoint, >= 0, summing to 1 (default: equal)")
    parser.add_argument("--out", type=Path, required=True, help="the soup's checkpoint directory")
    args = parser.parse_args(argv)
    n = len(args.checkpoints)
    if n < 2:
        parser.error("--checkpoints: give two or more")
    weights = args.weights or [1.0 / n] * n
    if len(weights) != n:
        parser.error(f"--weights: {len(weights)} given for {n} checkpoints")
    if min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
        parser.error(f"--weights: must be >= 0 and sum to 1, got {weights}")
    loaded = [load_checkpoint(path) for path in args.checkpoints]
    try:
        with torch.no_grad():
            model = average_models([m for m, _ in loaded], weights)
    except CheckpointError as exc:
        print(f"checkpoint_soup: {exc}", file=sys.stderr)
        return 2
    ingredients = [{"path": info["path"], "weight": w, "epoch": info.get("epoch"),
                    "val_score": info.get("metrics", {}).get("val_score")}
                   for (_, info), w in zip(loaded, weights, strict=True)]
    save_checkpoint(model, args.out, training_config={"soup": ingredients},
                    step=0, epoch=0, metrics={})
    parts = [f"{w:g} x {c}" for c, w in zip(args.checkpoints, weights, strict=True)]
    print(f"wrote {args.out}: {' + '.join(parts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
