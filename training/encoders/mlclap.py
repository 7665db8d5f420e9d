"""ML-CLAP checkpoints (Yan et al., 2024, "Bridging Language Gaps in Audio-Text Retrieval";
zyyan4/ml-clap) as a RetrievalModel.

ML-CLAP's `MLCLAP` module is CED (mean-pooled tokens) + SONAR's text encoder, each followed by
Linear-ReLU-Linear into 1024-d, and a `temperature` parameter used as a divisor. Its state dict:

    audio_encoder.model.*   CED, original key names        -> audio_backbone.*
    audio_proj.{0,2}.*      Linear(768, 1024), Linear(1024, 1024) -> audio_head.*
    text_proj.{0,2}.*       Linear(1024, 1024) x 2          -> text_head.*
    temperature             ()                              -> temperature
    text_encoder.model.*    SONAR encoder (fairseq2 keys)   -> kept aside, see below

The mapping reads sizes from the tensors, so any CED size and head width load (the tests use
a ced-tiny-sized file). SONAR needs its own environment (sonar-space pins another torch), so
the text side is decoupled: the audio side, both heads and the temperature load anywhere; the
text encoder is a stand-in that refuses to encode unless a text spec is given. To use the
file's (fine-tuned) SONAR weights, `export_sonar_text_encoder` writes them as `encoder.pt`
for a `sonar:<dir>` spec in the SONAR environment. See docs/checkpoints.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from atri.training.encoders.ced import CED_CONFIGS
from atri.training.encoders.model import ModelConfig, RetrievalModel, build_model
from atri.training.encoders.strict_load import CheckpointMismatchError, load_state_dict_strict
from atri.training.encoders.text_encoder import TextEncoder
from atri.training.fileio import atomic_write

log = logging.getLogger(__name__)

# sonar-raw: ML-CLAP's text_proj reads SONAR's raw, not unit-norm, sentence embeddings
MLCLAP_CONFIG = ModelConfig(audio="ced-base", text="sonar-raw", embed_dim=1024)
AUDIO_PREFIX = "audio_encoder.model."
TEXT_PREFIX = "text_encoder.model."
HEAD_PREFIXES = {"audio_proj.": "audio_head", "text_proj.": "text_head"}
HEAD_KEYS = ("0.weight", "0.bias", "2.weight", "2.bias")  # Linear, ReLU (no keys), Linear
EXPECTED = (
    f"{AUDIO_PREFIX}* (CED), audio_proj.{{0,2}}.{{weight,bias}}, "
    f"text_proj.{{0,2}}.{{weight,bias}}, temperature, optionally {TEXT_PREFIX}* (SONAR)"
)
_WRAPPERS = ("state_dict", "model")  # training scripts nest the weights under these
_WRAPPER_PREFIXES = ("module.", "model.")  # DataParallel / Lightning-style module prefixes


class TextEncoderUnavailable(RuntimeError):
    """The model's text encoder was not built (ML-CLAP's SONAR outside its environment)."""


class UnavailableTextEncoder:
    """Stands in for a text encoder that is not installed: it has the name and width the text
    head expects, so the audio side works, and refuses to encode with `reason`."""

    trainable = False
    version = "unavailable"

    def __init__(self, name: str, dim: int, reason: str) -> None:
        self.name, self.dim, self.reason = name, dim, reason

    def encode(self, texts: list[str], lang: str) -> Tensor:
        raise TextEncoderUnavailable(self.reason)


@dataclass(frozen=True)
class MlclapParts:
    """An ML-CLAP state dict split by destination, prefixes removed."""

    audio_backbone: dict[str, Tensor]  # CED original keys
    audio_head: dict[str, Tensor]  # HEAD_KEYS
    text_head: dict[str, Tensor]  # HEAD_KEYS
    temperature: Tensor  # ()
    text_encoder: dict[str, Tensor]  # SONAR encoder keys; empty if the file has none

    @property
    def audio(self) -> str:
        return ced_name_from_state(self.audio_backbone)

    @property
    def embed_dim(self) -> int:
        return int(self.audio_head["2.weight"].shape[0])

    @property
    def text_dim(self) -> int:
        return int(self.text_head["0.weight"].shape[1])


def ced_name_from_state(state: Mapping[str, Tensor]) -> str:
    """The CED registry name whose width matches `patch_embed.proj.weight` (D, 1, 16, 16)."""
    key = "patch_embed.proj.weight"
    if key not in state:
        raise CheckpointMismatchError(f"not a CED state dict: missing key {key!r}")
    width = state[key].shape[0]
    for name, cfg in CED_CONFIGS.items():
        if cfg.embed_dim == width:
            return name
    raise CheckpointMismatchError(
        f"no CED size has width {width} ({key} {tuple(state[key].shape)})"
    )


def unwrap_state_dict(obj: Mapping[str, object]) -> dict[str, Tensor]:
    """The tensors of a saved object: descends into 'state_dict' / 'model' entries and drops a
    'module.' / 'model.' prefix that every key shares."""
    while not _all_tensors(obj):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            others = sorted(k for k, v in obj.items() if not isinstance(v, Tensor))[:10]
            raise CheckpointMismatchError(
                f"no state dict found: entries {others} are not tensors and there is no "
                f"{' / '.join(_WRAPPERS)} entry to descend into"
            )
        obj = inner
    state = dict(obj)
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state  # type: ignore[return-value]


def _all_tensors(obj: Mapping[str, object]) -> bool:
    return bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def is_mlclap_state(state: Mapping[str, Tensor]) -> bool:
    return any(k.startswith((AUDIO_PREFIX, "audio_proj.", "text_proj.")) for k in state)


def split_mlclap_state(state: Mapping[str, Tensor]) -> MlclapParts:
    """Group an (unwrapped) ML-CLAP state dict; an error lists the expected groups, the ones
    found, and every missing or unexpected key."""
    audio = {
        k.removeprefix(AUDIO_PREFIX): v for k, v in state.items() if k.startswith(AUDIO_PREFIX)
    }
    text = {k.removeprefix(TEXT_PREFIX): v for k, v in state.items() if k.startswith(TEXT_PREFIX)}
    heads = {
        name: {k.removeprefix(p): v for k, v in state.items() if k.startswith(p)}
        for p, name in HEAD_PREFIXES.items()
    }
    missing = [
        f"{p}{k}" for p, name in HEAD_PREFIXES.items() for k in HEAD_KEYS if k not in heads[name]
    ]
    missing += [] if "temperature" in state else ["temperature"]
    missing += [] if audio else [f"{AUDIO_PREFIX}*"]
    known = (AUDIO_PREFIX, TEXT_PREFIX)
    unexpected = [
        k
        for k in state
        if not k.startswith(known)
        and k != "temperature"
        and not any(k == f"{p}{h}" for p in HEAD_PREFIXES for h in HEAD_KEYS)
    ]
    found = _found_groups(state)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"not a complete ML-CLAP state dict. Expected {EXPECTED}; found {found}; "
            f"missing keys {missing}; unexpected keys {unexpected}"
        )
    log.info("ML-CLAP state dict: %s", found)
    return MlclapParts(audio, heads["audio_head"], heads["text_head"], state["temperature"], text)


def _found_groups(state: Mapping[str, Tensor]) -> str:
    counts: dict[str, int] = {}
    for key in state:
        group = next(
            (p for p in (AUDIO_PREFIX, TEXT_PREFIX, *HEAD_PREFIXES) if key.startswith(p)), key
        )
        counts[group] = counts.get(group, 0) + 1
    return ", ".join(f"{g}* ({n} tensors)" if g.endswith(".") else g for g, n in counts.items())


def mlclap_model(
    parts: MlclapParts, *, text: str | None = None, device: str = "cpu", **overrides: object
) -> RetrievalModel:
    """A RetrievalModel holding an ML-CLAP checkpoint's CED, heads and temperature.

    `text=None`: the text encoder is an `UnavailableTextEncoder` (the audio side works without
    SONAR). Otherwise `text` is built with `build_text_encoder` and must give `text_dim`
    features, e.g. `sonar:<dir>` holding `export_sonar_text_encoder`'s output. `overrides`
    set other ModelConfig fields (e.g. audio_trainable=True).
    """
    config = replace(
        MLCLAP_CONFIG,
        audio=parts.audio,
        embed_dim=parts.embed_dim,
        text=text or "sonar-raw",
        **overrides,
    )
    encoder: TextEncoder | None = None
    if text is None:
        encoder = UnavailableTextEncoder("sonar-raw", parts.text_dim, _UNAVAILABLE)
    model = build_model(config, device=device, pretrained=False, text_encoder=encoder)
    if model.text_dim != parts.text_dim:
        raise CheckpointMismatchError(
            f"text_proj takes {parts.text_dim}-d features but text encoder {text!r} gives "
            f"{model.text_dim}-d"
        )
    if text is not None and parts.text_encoder and not text.startswith(("sonar:", "sonar-raw:")):
        log.warning(
            "the file's SONAR text encoder weights (%d tensors) are not used: text=%r",
            len(parts.text_encoder),
            text,
        )
    load_state_dict_strict(
        model.audio_backbone, parts.audio_backbone, f"{parts.audio} ({AUDIO_PREFIX}*)"
    )
    load_state_dict_strict(model.audio_head, parts.audio_head, "audio_head (audio_proj.*)")
    load_state_dict_strict(model.text_head, parts.text_head, "text_head (text_proj.*)")
    with torch.no_grad():
        model.temperature.copy_(parts.temperature)
    return model.eval()


_UNAVAILABLE = (
    "this ML-CLAP model was loaded without its text encoder (SONAR runs in its own environment, "
    "scripts/sonar_env.sh). There, export the file's SONAR weights with "
    "export_sonar_text_encoder, add tokenizer.model, and load with text='sonar-raw:<dir>'; "
    "see docs/checkpoints.md"
)


def export_sonar_text_encoder(parts: MlclapParts, out_dir: str | Path) -> Path:
    """Write the file's SONAR encoder weights as `<out_dir>/encoder.pt` ({'model': state}, the
    layout `sonar:<dir>` reads); the tokenizer (`tokenizer.model`) must be added beside it."""
    if not parts.text_encoder:
        raise ValueError(f"the ML-CLAP state dict has no {TEXT_PREFIX}* tensors to export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "encoder.pt", lambda f: torch.save({"model": parts.text_encoder}, f))
    log.info("wrote %d SONAR tensors to %s", len(parts.text_encoder), out / "encoder.pt")
    return out / "encoder.pt"
