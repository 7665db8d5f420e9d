"""Checkpoints that describe themselves, and the one loader for every model file we accept.

An atri checkpoint is a directory:

    model.safetensors  heads, temperature, and the audio backbone unless it is a frozen
                       packaged model (aisfx), and a trainable text tower
    checkpoint.json    format_version, model_config, identity, training_config, step, epoch,
                       metrics, created, atri_version, weights_sha256

`load_checkpoint` also takes "default" (the checkpoint shipped in the package), an ML-CLAP
checkpoint file or an official CED file (fresh heads). User files are unpickled only by
`load_torch_file` (torch's weights-only unpickler). Details: docs/checkpoints.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import secrets
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

import atri
from atri.training.encoders.aisfx_top import top_block_names
from atri.training.encoders.ced import hf_to_original_keys
from atri.training.encoders.mlclap import (
    UnavailableTextEncoder,
    ced_name_from_state,
    is_mlclap_state,
    mlclap_model,
    split_mlclap_state,
    unwrap_state_dict,
)
from atri.training.encoders.model import AUDIO_BACKBONES, ModelConfig, RetrievalModel, build_model
from atri.training.encoders.strict_load import check_state_dict, load_state_dict_strict
from atri.training.fileio import (
    file_sha256,
    fsync_dir,
    fsync_file,
    plain_mode,
    readable_dir,
    recover_dir,
    swap_dir,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


class CheckpointError(ValueError):
    """A checkpoint is refused: unknown format, or made with other frozen weights."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A torch file needs a pickle global outside the weights-only allow-list."""


def default_checkpoint_dir() -> Path:
    """`atri/training/checkpoints/default` inside the installed package."""
    return Path(__file__).resolve().parents[1] / "checkpoints" / "default"  # training/


def saved_state(model: RetrievalModel) -> dict[str, Tensor]:
    """The entries of `model.state_dict()` a checkpoint stores: everything except the frozen
    part of a packaged backbone, which is re-read from its package (and the whole backbone's
    hash checked) on load. With `audio_trainable_blocks` N the top N blocks are stored."""
    state = model.state_dict()
    if _packaged_frozen(model.config):
        kept = tuple(f"audio_backbone.cnn.{name}." for name in _trained_blocks(model))
        state = {k: v for k, v in state.items()
                 if not k.startswith("audio_backbone.") or k.startswith(kept)}
    return state


def _trained_blocks(model: RetrievalModel) -> list[str]:
    top = model.config.audio_trainable_blocks
    return top_block_names(model.audio_backbone, top) if top else []


def _packaged_frozen(config: ModelConfig) -> bool:
    """The backbone's weights, or those of its frozen lower blocks, come from its package."""
    spec = AUDIO_BACKBONES[config.audio]
    return spec.packaged and not config.audio_trainable and config.audio_weights is None


# --- saving ----------------------------------------------------------------------------


def save_checkpoint(
    model: RetrievalModel,
    out_dir: str | Path,
    *,
    training_config: Mapping[str, Any],
    step: int,
    epoch: int,
    metrics: Mapping[str, Any],
) -> Path:
    """Write the checkpoint directory `out_dir` atomically: the files go to a temp directory
    beside it, are fsynced, and the directory is renamed into place, so a crash or an error
    leaves the previous checkpoint (if any) complete. One writer per `out_dir` at a time."""
    if isinstance(model.text_encoder, UnavailableTextEncoder):
        raise CheckpointError(
            f"cannot save a model without its text encoder: {model.text_encoder.reason}"
        )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in saved_state(model).items()}
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "atri_version": atri.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_config": dataclasses.asdict(model.config),
        "identity": model.identity(),
        "training_config": dict(training_config),
        "step": int(step),
        "epoch": int(epoch),
        "metrics": dict(metrics),
    }
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write_files(tmp, state, meta)
        swap_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "saved checkpoint %s (step %d, epoch %d, %d tensors)", out_dir, step, epoch, len(state)
    )
    return out_dir


def _write_files(folder: Path, state: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """The weights, then the JSON naming their sha256, into `folder`; all fsynced."""
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format_version": str(FORMAT_VERSION)})
    fsync_file(folder / WEIGHTS_FILE)
    meta["weights_sha256"] = file_sha256(folder / WEIGHTS_FILE)
    text = json.dumps(meta, indent=2, default=_json_default) + "\n"
    (folder / META_FILE).write_text(text, encoding="utf-8")
    fsync_file(folder / META_FILE)
    plain_mode(folder / WEIGHTS_FILE)  # safetensors creates it 0600
    fsync_dir(folder)


def _json_default(obj: object) -> object:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (Tensor, np.ndarray, np.generic)):
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"checkpoint.json cannot store a {type(obj).__name__}: {obj!r}")


# --- loading -----------------------------------------------------------------------------


def load_torch_file(path: str | Path, allowed_globals: Sequence[Any] = ()) -> dict[str, Any]:
    """A user-supplied `.pt`/`.pth`/`.ckpt` as a dict, unpickled by torch's weights-only
    unpickler: tensors, plain containers and numbers only, plus `allowed_globals` for this
    call. Anything else raises `UnsafeCheckpointError` before it is built."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            obj = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path}: refused to unpickle: the file needs objects other than tensors and plain "
            f"containers, and arbitrary unpickling can run code. torch says: {exc}"
        ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """checkpoint.json of an atri checkpoint directory, format version checked."""
    path = readable_dir(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{path} is not an atri checkpoint: {META_FILE} is missing")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r}; atri {atri.__version__} reads "
            f"format_version {FORMAT_VERSION}"
        )
    return meta


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", text: str | None = None
) -> tuple[RetrievalModel, dict[str, Any]]:
    """(model in eval mode, info) from an atri checkpoint directory, "default", an ML-CLAP
    checkpoint file or an official CED file (original `.pt` or HF `.safetensors`).

    `text` overrides the text encoder spec (e.g. a moved `hf:<dir>`, or `sonar:<dir>` for
    ML-CLAP); for atri checkpoints the recorded text encoder version must still match.
    info: checkpoint.json's content for atri checkpoints, else source, model_config, identity;
    always `source` ("atri" | "mlclap" | "ced") and `path`.
    """
    if str(path) == "default":
        path = default_checkpoint_dir()
        if not path.is_dir():
            raise FileNotFoundError(f"no default checkpoint is installed (expected {path})")
    path = readable_dir(path)
    if path.is_dir():
        return _load_atri(path, device, text)
    if path.suffix in TORCH_SUFFIXES:
        state = unwrap_state_dict(load_torch_file(path))
        if is_mlclap_state(state):
            model = mlclap_model(split_mlclap_state(state), text=text, device=str(device))
            return model, _foreign_info("mlclap", path, model)
        return _load_ced(state, path, device, text)
    if path.suffix == ".safetensors":
        return _load_ced(load_file(str(path)), path, device, text)
    raise CheckpointError(
        f"{path}: not a checkpoint directory, nor a {'/'.join(TORCH_SUFFIXES)} or .safetensors file"
    )


def _load_atri(
    path: Path, device: str | torch.device, text: str | None
) -> tuple[RetrievalModel, dict[str, Any]]:
    meta = read_checkpoint_meta(path)
    config = _model_config(meta["model_config"], path)
    if text is not None:
        config = dataclasses.replace(config, text=text)
    model = build_model(config, device=device, pretrained=_packaged_frozen(config))
    recorded = meta["identity"]
    text_now = {
        "text_encoder": model.text_encoder.name,
        "text_encoder_version": model.text_encoder.version,
    }
    _check_same(path, recorded, text_now, tuple(text_now))
    weights = path / WEIGHTS_FILE
    digest = file_sha256(weights)
    if digest != meta.get("weights_sha256"):
        raise CheckpointError(
            f"{weights}: sha256 {digest} differs from the {meta.get('weights_sha256')} recorded in "
            f"{META_FILE}: the two files do not belong together"
        )
    state = load_file(str(weights), device=str(device))
    check_state_dict(saved_state(model), state, f"checkpoint {path}")
    model.load_state_dict(state, strict=False)  # the rest is the packaged backbone
    _check_same(path, recorded, model.identity(), ("audio_backbone", "audio_weights_sha256"))
    log.info("loaded checkpoint %s (step %s, epoch %s)", path, meta.get("step"), meta.get("epoch"))
    return model.eval(), {**meta, "source": "atri", "path": str(path)}


def _model_config(fields: Mapping[str, Any], path: Path) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise CheckpointError(f"{path}: model_config has fields this atri does not know: {unknown}")
    return ModelConfig(**fields)  # absent fields take today's defaults


def _check_same(
    path: Path, recorded: Mapping[str, str], current: Mapping[str, str], keys: Sequence[str]
) -> None:
    diff = {k: (recorded.get(k), current.get(k)) for k in keys if recorded.get(k) != current.get(k)}
    if diff:
        lines = "; ".join(f"{k}: checkpoint {a!r}, installed {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"{path} was made with other frozen weights than the installed ones ({lines}). Its "
            "heads were trained on those weights' features, so its embeddings would be wrong: "
            "install the recorded version, or retrain."
        )


def _load_ced(
    state: Mapping[str, Tensor], path: Path, device: str | torch.device, text: str | None
) -> tuple[RetrievalModel, dict[str, Any]]:
    """An official CED file -> a model with that backbone (frozen) and fresh heads."""
    is_hf = any(k.startswith(("encoder.", "ced_model.")) for k in state)
    state = hf_to_original_keys(state) if is_hf else dict(state)
    name = ced_name_from_state(state)
    config = ModelConfig(audio=name, audio_weights=str(path), **({"text": text} if text else {}))
    model = build_model(config, device=device, pretrained=False)
    if is_hf:  # HF files lack the front-end buffers; ours equal the official ones
        own = model.audio_backbone.state_dict()
        state = {**{k: v for k, v in own.items() if k.startswith("front_end.")}, **state}
    load_state_dict_strict(model.audio_backbone, state, f"{name} ({path})")
    log.info("loaded %s from %s with fresh heads", name, path)
    return model.eval(), _foreign_info("ced", path, model)


def _foreign_info(source: str, path: Path, model: RetrievalModel) -> dict[str, Any]:
    return {
        "source": source,
        "path": str(path),
        "model_config": dataclasses.asdict(model.config),
        "identity": model.identity(),
    }
