"""`atri train` (shared spec cli.md): the training configuration and the command line.

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
import json
import logging
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atri.training.command import BadInput, run_command
from atri.training.corpus.schema import LANGS
from atri.training.features import default_cache_dir
from atri.training.model import AUDIO_BACKBONES, ModelConfig
from atri.training.sampling import ENGLISH, MIXTURE_PROB, STRATEGIES
from atri.training.text_encoder import parse_spec

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run learns. Study runs differ only in these fields."""

    strategy: str  # one of sampling.STRATEGIES
    train: str  # training manifest (absolute path)
    val: str  # validation manifest (absolute path)
    model: ModelConfig = field(default_factory=ModelConfig)
    langs: tuple[str, ...] = LANGS  # training languages; K = len(langs) for KCL
    epochs: int = 10  # ATRI Sec. 5
    batch_size: int = 24  # ATRI Sec. 5; the contrastive (global) batch, split over ranks
    lr: float = 1e-3  # peak lr of the heads and the temperature
    backbone_lr: float = 2e-5  # peak lr of a trainable audio backbone or text tower
    weight_decay: float = 0.01  # AdamW, on weight matrices only (not tau, biases, norms)
    warmup: float = 0.05  # fraction of all steps with linear warmup, then cosine to 0
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    seed: int = 0
    mixture_prob: float = MIXTURE_PROB  # mlclap-mixture: keep a non-English caption
    max_audio_seconds: float = 10.0  # trainable backbone: clips cropped to this length
    augment_views: int = 0  # augmented audio views per training clip (feature_views.py)
    # A checkpoint whose heads and temperature start this run (same model config): continued
    # training on new data beside a replay of the old (trainer.init_heads).
    init_from: str | None = None
    # Keep the text head as built or initialised: only the audio head and tau learn, so the
    # text space an `init_from` model was trained into stays put (continued training).
    freeze_text_head: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["langs"] = list(self.langs)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadInput(f"unknown training config field(s) {unknown}; known: {sorted(known)}")
        missing = [name for name in ("strategy", "train", "val") if values.get(name) is None]
        if missing:
            flags = ", ".join(f"--{name}" for name in missing)
            raise BadInput(f"missing {flags} (or the same fields in --config)")
        model = dict(values.pop("model", None) or {})
        model_known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(model) - model_known)
        if unknown:
            raise BadInput(f"unknown model config field(s) {unknown}; known: {sorted(model_known)}")
        if "langs" in values:
            values["langs"] = tuple(values["langs"])
        config = cls(**values, model=ModelConfig(**model))
        config.check()
        return config

    def check(self) -> None:
        """Raise BadInput on a configuration no run could use."""
        problems = [*_type_problems(self), *_type_problems(self.model, "model.")]
        if problems:
            raise BadInput("; ".join(problems))
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy {self.strategy!r} is not one of {list(STRATEGIES)}")
        if not self.langs or len(set(self.langs)) != len(self.langs):
            problems.append(f"langs {list(self.langs)} must be distinct and non-empty")
        if unknown := [lang for lang in self.langs if lang not in LANGS]:
            problems.append(f"langs {unknown} are not among {list(LANGS)}")
        if self.strategy == "cacl" and (ENGLISH not in self.langs or len(self.langs) < 2):
            problems.append("cacl needs English and at least one other language in langs")
        if self.model.text_trainable_layers and not _partly_trainable(self.model.text):
            problems.append(f"model.text_trainable_layers needs a text encoder that fine-tunes "
                            f"its top layers (e5-small-torch), not {self.model.text!r}")
        if self.model.text_trainable and _partly_trainable(self.model.text):
            problems.append("model.text_trainable: e5-small-torch trains its top layers; "
                            "use model.text_trainable_layers (--text-trainable-layers N)")
        if self.model.audio not in AUDIO_BACKBONES:
            problems.append(f"audio backbone {self.model.audio!r} not in {sorted(AUDIO_BACKBONES)}")
        for name, ok in (
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 2),
            ("lr", self.lr > 0),
            ("backbone_lr", self.backbone_lr > 0),
            ("weight_decay", self.weight_decay >= 0),
            ("warmup", 0 <= self.warmup < 1),
            ("grad_clip", self.grad_clip >= 0),
            ("mixture_prob", 0 <= self.mixture_prob <= 1),
            ("max_audio_seconds", self.max_audio_seconds > 0),
            ("augment_views", self.augment_views >= 0),
            ("model.embed_dim", self.model.embed_dim >= 1),
            ("model.tau_init", 0.001 <= self.model.tau_init <= 0.5),
            ("model.audio_dropout", 0 <= self.model.audio_dropout < 1),
            ("model.text_trainable_layers", self.model.text_trainable_layers >= 0),
        ):
            if not ok:
                problems.append(f"{name} = {getattr_path(self, name)!r} is out of range")
        if problems:
            raise BadInput("; ".join(problems))


def _partly_trainable(spec: str) -> bool:
    try:
        return parse_spec(spec).backend == "e5-torch"
    except ValueError:
        return False  # an unknown spec fails when the encoder is built, naming the choices


def _type_problems(obj: object, prefix: str = "") -> list[str]:
    """Fields whose value does not have the annotated type (a JSON "10" for an int)."""
    problems = []
    for name, hint in typing.get_type_hints(type(obj)).items():
        value = getattr(obj, name)
        if hint == tuple[str, ...]:
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        elif hint is ModelConfig:
            ok = isinstance(value, ModelConfig)
        else:
            allowed = typing.get_args(hint) or (hint,)  # `str | None` -> (str, NoneType)
            if float in allowed:
                allowed = (*allowed, int)
            ok = isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))
        if not ok:
            problems.append(f"{prefix}{name} = {value!r} is not of type {hint}")
    return problems


def getattr_path(obj: object, name: str) -> object:
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class RunOptions:
    """How a run is executed; none of it changes what it learns."""

    out: Path
    resume: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)
    max_minutes: float | None = None  # stop (resumably) once this much wall time has passed
    workers: int = 2  # audio decoding processes when the backbone trains on live audio
    # Captions per GradCache chunk for a trainable text tower (grad_cache.py); 0: plain
    # steps. Same gradients either way, so it is not part of what a run learns.
    grad_cache: int = 0


# flag -> (config field, type); model fields are "model.<name>"
CONFIG_FLAGS: dict[str, tuple[str, type]] = {
    "--strategy": ("strategy", str),
    "--train": ("train", Path),
    "--val": ("val", Path),
    "--epochs": ("epochs", int),
    "--seed": ("seed", int),
    "--batch-size": ("batch_size", int),
    "--lr": ("lr", float),
    "--backbone-lr": ("backbone_lr", float),
    "--weight-decay": ("weight_decay", float),
    "--warmup": ("warmup", float),
    "--grad-clip": ("grad_clip", float),
    "--mixture-prob": ("mixture_prob", float),
    "--max-audio-seconds": ("max_audio_seconds", float),
    "--augment-views": ("augment_views", int),
    "--init-from": ("init_from", str),
    "--audio": ("model.audio", str),
    "--audio-weights": ("model.audio_weights", str),
    "--text": ("model.text", str),
    "--embed-dim": ("model.embed_dim", int),
    "--tau-init": ("model.tau_init", float),
    "--text-head": ("model.text_head", str),
    "--audio-dropout": ("model.audio_dropout", float),
    "--text-trainable-layers": ("model.text_trainable_layers", int),
}
SWITCHES: dict[str, str] = {
    "--freeze-text-head": "freeze_text_head",
    "--fixed-tau": "model.fixed_tau",
    "--audio-trainable": "model.audio_trainable",
    "--text-trainable": "model.text_trainable",
}


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
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


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if key == "model" and isinstance(value, Mapping):
            merged["model"] = {**(merged.get("model") or {}), **value}
        else:
            merged[key] = value
    return merged


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadInput(f"{what} {path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} {path}: bad JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise BadInput(f"{what} {path}: expected a JSON object")
    return values


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """defaults < RUN_DIR/config.json (when resuming) < --config file < flags."""
    stored_file = args.out / CONFIG_FILE
    stored = _read_json(stored_file, "run config") if stored_file.is_file() else None
    if stored is not None and not args.resume:
        raise BadInput(f"{args.out} already holds a run: pass --resume, or choose another --out")
    values: dict[str, Any] = dict(stored or {})
    if args.config is not None:
        from_file = _read_json(args.config, "--config")
        for key in ("train", "val"):
            if isinstance(from_file.get(key), str):
                from_file[key] = str(Path(from_file[key]).resolve())
        values = _merge(values, from_file)
    config = TrainConfig.from_dict(_merge(values, _overrides(args)))
    if stored is not None:
        before = TrainConfig.from_dict(stored).to_dict()
        after = config.to_dict()
        changed = sorted(k for k in after if after[k] != before[k])
        if changed:
            raise BadInput(
                f"--resume cannot change {changed} of the run in {args.out} "
                f"(stored in {stored_file})"
            )
    return config


def run(args: argparse.Namespace) -> int:
    from atri.training.trainer import train

    if args.workers < 0:
        raise BadInput("--workers must be >= 0")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise BadInput("--max-minutes must be > 0")
    if args.grad_cache < 0:
        raise BadInput("--grad-cache must be >= 0")
    config = resolve_config(args)
    options = RunOptions(
        out=args.out, resume=args.resume, cache_dir=args.cache_dir,
        max_minutes=args.max_minutes, workers=args.workers, grad_cache=args.grad_cache,
    )
    status = train(config, options)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"atri train: {status}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from atri.training.manifest import ManifestError

    rank = int(os.environ.get("RANK", "0"))
    return run_command(
        _parser(), run, argv, {BadInput: 2, ManifestError: 2},
        log_level=logging.INFO if rank == 0 else logging.WARNING,
        log_format=f"%(asctime)s %(levelname)s [rank {rank}] %(message)s",
    )
