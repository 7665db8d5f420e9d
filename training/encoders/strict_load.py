"""Strict state-dict loading whose errors name every offending key.

One loader for CED, aisfx, ML-CLAP and atri checkpoints: torch's own `strict=True` error
stops at the first size mismatch, and CED's `strict=False` hides problems altogether.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the model; the message names every offending key."""


def check_state_dict(
    expected: Mapping[str, Tensor], state: Mapping[str, Tensor], what: str = "model"
) -> None:
    """Raise `CheckpointMismatchError` listing every missing, unexpected and wrongly shaped
    key of `state` against `expected` (name -> tensor of the right shape)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(
            f"state dict does not fit {what}: missing keys {missing}, "
            f"unexpected keys {unexpected}, shape mismatches {shapes}"
        )


def load_state_dict_strict(
    model: nn.Module, state: Mapping[str, Tensor], what: str | None = None
) -> None:
    """`load_state_dict(strict=True)` whose error lists every missing, unexpected and
    wrongly shaped key up front."""
    check_state_dict(model.state_dict(), state, what or type(model).__name__)
    model.load_state_dict(dict(state), strict=True)
