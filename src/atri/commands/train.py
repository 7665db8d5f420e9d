"""`atri train` (shared spec cli.md): the command line over config.py and trainer.py.

    atri train --train M --val M --strategy {mlclap,mlclap-mixture,cacl,kcl,kcl-balanced}
               --out RUN_DIR [--config F] [--epochs N] [--seed N] [--resume] [...]

A run's configuration is `TrainConfig` (its defaults are the only ones), overridden by a
JSON file (`--config F`, same field names, `"model": {...}` for ModelConfig) and then by
flags. It is saved as RUN_DIR/config.json; `--resume` reads it back and refuses flags that
would change it. Under `torchrun` each process runs `main` and the ranks share the work
(trainer.py); docs/training.md has the whole story.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atri.commands.common import BadInput, run_command
from atri.training.config import ConfigError, RunOptions, TrainConfig, resolve_config
from atri.training.data.features import default_cache_dir
from atri.training.encoders.model import ModelConfig
from atri.training.objectives.strategies import STRATEGIES

log = logging.getLogger(__name__)

# flag -> (config field, type); model fields are "model.<name>"
CONFIG_FLAGS: dict[str, tuple[str, type]] = {
    "--strategy": ("strategy", str),
    "--train": ("train", Path),
    "--val": ("val", Path),
    "--epochs": ("epochs", int),
    "--patience": ("patience", int),
    "--seed": ("seed", int),
    "--batch-size": ("batch_size", int),
    "--lr": ("lr", float),
    "--backbone-lr": ("backbone_lr", float),
    "--weight-decay": ("weight_decay", float),
    "--warmup": ("warmup", float),
    "--lr-schedule": ("lr_schedule", str),
    "--grad-clip": ("grad_clip", float),
    "--mixture-prob": ("mixture_prob", float),
    "--max-audio-seconds": ("max_audio_seconds", float),
    "--augment-views": ("augment_views", int),
    "--init-from": ("init_from", str),
    "--mask-same": ("mask_same", str),
    "--prototype-weight": ("prototype_weight", float),
    "--prototype-key": ("prototype_key", str),
    "--audio": ("model.audio", str),
    "--audio-weights": ("model.audio_weights", str),
    "--text": ("model.text", str),
    "--embed-dim": ("model.embed_dim", int),
    "--tau-init": ("model.tau_init", float),
    "--text-head": ("model.text_head", str),
    "--audio-dropout": ("model.audio_dropout", float),
    "--text-trainable-layers": ("model.text_trainable_layers", int),
    "--audio-trainable-blocks": ("model.audio_trainable_blocks", int),
}
SWITCHES: dict[str, str] = {
    "--freeze-text-head": "freeze_text_head",
    "--mask-duplicate-captions": "mask_duplicate_captions",
    "--multi-positive": "multi_positive",
    "--fixed-tau": "model.fixed_tau",
    "--audio-trainable": "model.audio_trainable",
    "--text-trainable": "model.text_trainable",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atri train", description="Train a multilingual audio-text retrieval model."
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--config", type=Path, help="JSON file of TrainConfig fields")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    defaults = {**_field_defaults(TrainConfig), **{
        f"model.{k}": v for k, v in _field_defaults(ModelConfig).items()}}
    for flag, (name, type_) in CONFIG_FLAGS.items():
        default = f"default {defaults[name]}" if name in defaults else "required"
        if flag == "--strategy":
            default = f"one of {', '.join(STRATEGIES)}; required"
        parser.add_argument(flag, type=type_, dest=name, metavar=flag[2:].upper(),
                            help=f"{name} ({default})")
    parser.add_argument("--langs", help="comma-separated training languages (default: all 8)")
    for flag, name in SWITCHES.items():
        parser.add_argument(flag, action="store_const", const=True, dest=name,
                            help=f"{name} = true")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(os.environ),
                        help="frozen-feature cache (default %(default)s)")
    parser.add_argument("--max-minutes", type=float,
                        help="stop at a step boundary after this wall time; --resume continues")
    parser.add_argument("--workers", type=int, default=RunOptions.workers,
                        help="audio decoding processes for a trainable backbone")
    parser.add_argument("--grad-cache", type=int, default=RunOptions.grad_cache, metavar="N",
                        help="trainable text tower: GradCache in chunks of N captions "
                             "(0: plain steps; same gradients, less memory)")
    return parser


def _field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, as a nested config dict."""
    out: dict[str, Any] = {}
    names = [name for name, _ in CONFIG_FLAGS.values()] + list(SWITCHES.values())
    for name in names:
        value = getattr(args, name)
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value.resolve())
        head, _, tail = name.partition(".")
        if tail:
            out.setdefault(head, {})[tail] = value
        else:
            out[name] = value
    if args.langs is not None:
        out["langs"] = [lang.strip() for lang in args.langs.split(",") if lang.strip()]
    return out


def run(args: argparse.Namespace) -> int:
    from atri.training.trainer import train

    if args.workers < 0:
        raise BadInput("--workers must be >= 0")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise BadInput("--max-minutes must be > 0")
    if args.grad_cache < 0:
        raise BadInput("--grad-cache must be >= 0")
    config = resolve_config(args.out, args.resume, args.config, _overrides(args))
    place = torchrun_place(os.environ)
    options = RunOptions(
        out=args.out, resume=args.resume, cache_dir=args.cache_dir,
        max_minutes=args.max_minutes, workers=args.workers, grad_cache=args.grad_cache,
        world_size=place.world_size, local_rank=place.local_rank,
    )
    status = train(config, options)
    if place.rank == 0:
        print(f"atri train: {status}")
    return 0


@dataclasses.dataclass(frozen=True)
class TorchrunPlace:
    rank: int
    world_size: int
    local_rank: int


def torchrun_place(environ: Mapping[str, str]) -> TorchrunPlace:
    """This process's place in the run, from the variables torchrun sets for each process
    it starts (RANK, WORLD_SIZE, LOCAL_RANK); without them, the only process."""
    return TorchrunPlace(
        rank=int(environ.get("RANK", "0")),
        world_size=int(environ.get("WORLD_SIZE", "1")),
        local_rank=int(environ.get("LOCAL_RANK", "0")),
    )


def main(argv: list[str] | None = None) -> int:
    from atri.training.data.manifest import ManifestError

    rank = torchrun_place(os.environ).rank
    return run_command(
        build_parser(), run, argv, {ConfigError: 2, ManifestError: 2},
        log_level=logging.INFO if rank == 0 else logging.WARNING,
        log_format=f"%(asctime)s %(levelname)s [rank {rank}] %(message)s",
    )
