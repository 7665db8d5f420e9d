"""The optimiser's setup for `atri train`: AdamW parameter groups, with weight decay on
weight matrices only (not the temperature, biases or norm gains), and the learning-rate
schedule, linear warmup then cosine decay to 0 (or a constant rate after one epoch of
warmup), a pure function of the step, so that a resumed run follows the same curve."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from atri.training.config import TrainConfig
    from atri.training.encoders.model import RetrievalModel


def lr_factor(step: int, total: int, warmup: float, schedule: str = "cosine",
              epoch_steps: int = 0) -> float:
    """`cosine`: linear warmup over the first `warmup` fraction of `total` steps, then
    cosine to 0 at `total`. `constant`: linear warmup over the first epoch (`epoch_steps`),
    then the peak for good; for runs ended by early stopping, whose schedule must not
    depend on the epoch budget (a cosine over a long budget stops runs still in warmup)."""
    if schedule == "constant":
        return min(1.0, (step + 1) / max(1, epoch_steps))
    warmup_steps = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: RetrievalModel, config: TrainConfig) -> list[dict[str, Any]]:
    """Heads and temperature at `lr`, trainable backbones at `backbone_lr`; weight decay
    only on matrices (ndim >= 2): never on the temperature, biases or norm gains."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        backbone = name.startswith(("audio_backbone.", "text_tower."))
        groups.setdefault((backbone, param.ndim >= 2), []).append(param)
    out = []
    for (backbone, decay), params in sorted(groups.items()):
        base = config.backbone_lr if backbone else config.lr
        out.append({
            "params": params, "lr": base, "base_lr": base,
            "weight_decay": config.weight_decay if decay else 0.0,
        })
    return out
