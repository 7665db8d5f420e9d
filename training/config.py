"""A training run's configuration (shared spec cli.md; docs/training.md): `TrainConfig`,
everything that decides what a run learns (its defaults are the only ones), and
`RunOptions`, how it is executed. `resolve_config` layers them: defaults < the run's
stored RUN_DIR/config.json (resuming) < a JSON file < command-line overrides."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atri.training.encoders.aisfx import AISFX
from atri.training.encoders.model import AUDIO_BACKBONES, ModelConfig
from atri.training.encoders.text_encoder import parse_spec
from atri.training.languages import LANGS
from atri.training.objectives.sampling import MIXTURE_PROB
from atri.training.objectives.strategies import STRATEGIES

SCHEDULES = ("cosine", "constant")  # optim.lr_factor


class ConfigError(ValueError):
    """A configuration no run can use, or one a resumed run cannot continue with; the
    message names the field or file."""


CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run learns. Study runs differ only in these fields."""

    strategy: str  # a key of strategies.STRATEGIES
    train: str  # training manifest (absolute path)
    val: str  # validation manifest (absolute path)
    model: ModelConfig = field(default_factory=ModelConfig)
    langs: tuple[str, ...] = LANGS  # training languages; K = len(langs) for KCL
    epochs: int = 10  # ATRI Sec. 5; with `patience`, the most a run may train
    # Early stopping: end the run once the validation score has not improved for this
    # many epochs (0 = train all `epochs`). The schedule still spans `epochs`.
    patience: int = 0
    batch_size: int = 24  # ATRI Sec. 5; the contrastive (global) batch, split over ranks
    lr: float = 1e-3  # peak lr of the heads and the temperature
    backbone_lr: float = 2e-5  # peak lr of a trainable audio backbone or text tower
    weight_decay: float = 0.01  # AdamW, on weight matrices only (not tau, biases, norms)
    warmup: float = 0.05  # fraction of all steps with linear warmup, then cosine to 0
    # "cosine" (over `epochs`), or "constant" after one epoch of warmup (optim.lr_factor):
    # with `patience`, a schedule that does not depend on the epoch budget.
    lr_schedule: str = "cosine"
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    seed: int = 0
    mixture_prob: float = MIXTURE_PROB  # mlclap-mixture: keep a non-English caption
    max_audio_seconds: float = 10.0  # trainable backbone: clips cropped to this length
    augment_views: int = 0  # augmented audio views per training clip (feature_views.py)
    # A checkpoint whose heads and temperature start this run (same model config): continued
    # training on new data beside a replay of the old (init_from.init_heads).
    init_from: str | None = None
    # Keep the text head as built or initialised: only the audio head and tau learn, so the
    # text space an `init_from` model was trained into stays put (continued training).
    freeze_text_head: bool = False
    # kcl, kcl-balanced: a caption string that two clips of a batch share is no negative
    # of either (losses.duplicate_caption_mask); real recordings of one concept often do.
    mask_duplicate_captions: bool = False
    # kcl, kcl-balanced: clips whose manifest `meta` holds the same values under these
    # keys ("concept", or "concept+attrs") are no negatives of each other, whatever their
    # captions say; clips without the first key are masked as mask_duplicate_captions
    # says. Our option, not the papers'.
    mask_same: str | None = None
    # kcl, kcl-balanced: the pairs mask_duplicate_captions / mask_same name are positives
    # (losses.kcl_loss: a caption pulled toward every clip it describes in the batch)
    # instead of being left out of the denominators. Our option, not the papers'.
    multi_positive: bool = False
    # Weight W of the concept-prototype loss (objectives/prototypes.py): each caption of a
    # clip grouped by the manifest `meta` keys `prototype_key` is classified among every
    # group's mean training-audio embedding. 0: off. Needs cached (frozen) audio features.
    # Our option, not the papers'.
    prototype_weight: float = 0.0
    prototype_key: str | None = None

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
            raise ConfigError(f"unknown training config field(s) {unknown}; known: {sorted(known)}")
        missing = [name for name in ("strategy", "train", "val") if values.get(name) is None]
        if missing:
            flags = ", ".join(f"--{name}" for name in missing)
            raise ConfigError(f"missing {flags} (or the same fields in --config)")
        model = dict(values.pop("model", None) or {})
        model_known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(model) - model_known)
        if unknown:
            raise ConfigError(
                f"unknown model config field(s) {unknown}; known: {sorted(model_known)}"
            )
        if "langs" in values:
            values["langs"] = tuple(values["langs"])
        config = cls(**values, model=ModelConfig(**model))
        config.check()
        return config

    def check(self) -> None:
        """Raise ConfigError on a configuration no run could use."""
        problems = [*_type_problems(self), *_type_problems(self.model, "model.")]
        if problems:
            raise ConfigError("; ".join(problems))
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy {self.strategy!r} is not one of {list(STRATEGIES)}")
        elif problem := STRATEGIES[self.strategy].langs_problem(self.langs):
            problems.append(problem)
        elif not STRATEGIES[self.strategy].masks_duplicates:
            masking = [name for name, s in STRATEGIES.items() if s.masks_duplicates]
            for name in ("mask_duplicate_captions", "mask_same", "multi_positive"):
                if getattr(self, name):
                    problems.append(f"{name}: strategy {self.strategy!r} does not "
                                    f"support it; use one of {masking}")
        if not self.langs or len(set(self.langs)) != len(self.langs):
            problems.append(f"langs {list(self.langs)} must be distinct and non-empty")
        if self.multi_positive and not (self.mask_duplicate_captions or self.mask_same):
            problems.append("multi_positive needs the pairs it makes positive: "
                            "mask_duplicate_captions or mask_same")
        if self.prototype_weight < 0:
            problems.append(f"prototype_weight = {self.prototype_weight} must be >= 0")
        if self.prototype_weight > 0 and not self.prototype_key:
            problems.append("prototype_weight needs prototype_key: the meta keys that group "
                            "clips (e.g. 'concept' or 'concept+attrs')")
        if self.prototype_weight > 0 and self.model.audio_trains:
            problems.append("prototype_weight needs cached audio features: a frozen audio "
                            "tower (no audio_trainable, audio_trainable_blocks 0)")
        for name in ("mask_same", "prototype_key"):
            keys = getattr(self, name)
            if keys is not None and not all(keys.split("+")):
                problems.append(f"{name} {keys!r}: meta keys joined by '+', "
                                "none empty (e.g. 'concept' or 'concept+attrs')")
        if unknown := [lang for lang in self.langs if lang not in LANGS]:
            problems.append(f"langs {unknown} are not among {list(LANGS)}")
        if self.model.text_trainable_layers and not _partly_trainable(self.model.text):
            problems.append(f"model.text_trainable_layers needs a text encoder that fine-tunes "
                            f"its top layers (e5-small-torch), not {self.model.text!r}")
        if self.model.text_trainable and _partly_trainable(self.model.text):
            problems.append("model.text_trainable: e5-small-torch trains its top layers; "
                            "use model.text_trainable_layers (--text-trainable-layers N)")
        if self.model.audio not in AUDIO_BACKBONES:
            problems.append(f"audio backbone {self.model.audio!r} not in {sorted(AUDIO_BACKBONES)}")
        problems.extend(_audio_blocks_problems(self.model))
        for name, ok in (
            ("epochs", self.epochs >= 1),
            ("patience", self.patience >= 0),
            ("batch_size", self.batch_size >= 2),
            ("lr", self.lr > 0),
            ("backbone_lr", self.backbone_lr > 0),
            ("weight_decay", self.weight_decay >= 0),
            ("warmup", 0 <= self.warmup < 1),
            ("lr_schedule", self.lr_schedule in SCHEDULES),
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
            raise ConfigError("; ".join(problems))


def _audio_blocks_problems(model: ModelConfig) -> list[str]:
    blocks, most = model.audio_trainable_blocks, len(AISFX.widths)
    if not blocks:
        return []
    if not 1 <= blocks <= most:
        return [f"model.audio_trainable_blocks = {blocks} is out of range: aisfx has {most} "
                f"conv blocks (0 = frozen, 1..{most})"]
    if model.audio != "aisfx":
        return [f"model.audio_trainable_blocks = {blocks}: only the aisfx backbone fine-tunes "
                f"its top blocks, not {model.audio!r} (--audio-trainable trains a whole one)"]
    if model.audio_trainable:
        return ["model.audio_trainable trains the whole backbone, model.audio_trainable_blocks "
                "only its top blocks: choose one"]
    return []


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
    cache_dir: Path  # frozen-feature cache (commands: features.default_cache_dir)
    resume: bool = False
    max_minutes: float | None = None  # stop (resumably) once this much wall time has passed
    workers: int = 2  # audio decoding processes when the backbone trains on live audio
    # Captions per GradCache chunk for a trainable text tower (objectives/grad_cache.py);
    # 0: plain steps. Same gradients either way, so it is not part of what a run learns.
    grad_cache: int = 0
    # this process's place under torchrun (its WORLD_SIZE and LOCAL_RANK, which the
    # command reads): processes in the run, and this one's device index on its machine
    world_size: int = 1
    local_rank: int = 0


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
        raise ConfigError(f"{what} {path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path}: bad JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{what} {path}: expected a JSON object")
    return values


def resolve_config(
    out: Path, resume: bool, config_file: Path | None, overrides: Mapping[str, Any]
) -> TrainConfig:
    """defaults < RUN_DIR/config.json (when resuming) < `config_file` < `overrides` (a
    nested config dict, `"model": {...}` for ModelConfig fields)."""
    stored_file = out / CONFIG_FILE
    stored = _read_json(stored_file, "run config") if stored_file.is_file() else None
    if stored is not None and not resume:
        raise ConfigError(f"{out} already holds a run: pass --resume, or choose another --out")
    values: dict[str, Any] = dict(stored or {})
    if config_file is not None:
        from_file = _read_json(config_file, "--config")
        for key in ("train", "val"):
            if isinstance(from_file.get(key), str):
                from_file[key] = str(Path(from_file[key]).resolve())
        values = _merge(values, from_file)
    config = TrainConfig.from_dict(_merge(values, overrides))
    if stored is not None:
        before = TrainConfig.from_dict(stored).to_dict()
        after = config.to_dict()
        changed = sorted(k for k in after if after[k] != before[k])
        if changed:
            raise ConfigError(
                f"--resume cannot change {changed} of the run in {out} "
                f"(stored in {stored_file})"
            )
    return config
