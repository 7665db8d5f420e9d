"""CED audio transformer (Dinkel et al., "CED: Consistent ensemble distillation for audio
tagging", ICASSP 2024) in plain torch, with ML-CLAP's retrieval pooling.

Written from the facts in the shared spec `ced_reference/` (config.md, hf_key_mapping.md); no
CED code is copied. The module tree reproduces the official state_dict keys, so original `.pt`
checkpoints load as they are and Hugging Face `mispeech/ced-*` safetensors load after a key
rename. Usage: `load_ced("ced-base", path).embed(waves)`; see docs/ced.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atri.training.encoders.frontend import CedLogMel, LogMelConfig
from atri.training.encoders.strict_load import CheckpointMismatchError as CheckpointMismatchError
from atri.training.encoders.strict_load import load_state_dict_strict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CedConfig:
    name: str
    embed_dim: int
    num_heads: int
    depth: int = 12
    mlp_ratio: int = 4
    patch_size: int = 16
    target_length: int = 1012  # frames per chunk (63 time patches); longer inputs are chunked
    num_classes: int = 527  # AudioSet
    frontend: LogMelConfig = field(default_factory=LogMelConfig)
    # Official CED drops the last chunk of a long input when it is exactly `target_length`
    # frames (a 20.23 s clip is embedded from its first 10.12 s only), while a last chunk one
    # frame shorter is zero-padded and kept. We keep it by default so that every frame counts
    # and the embedding does not jump at multiples of 1012 frames; True reproduces the
    # official outputs exactly (parity mode).
    drop_full_last_chunk: bool = False


CED_CONFIGS: dict[str, CedConfig] = {
    "ced-tiny": CedConfig("ced-tiny", embed_dim=192, num_heads=3),
    "ced-mini": CedConfig("ced-mini", embed_dim=256, num_heads=4),
    "ced-small": CedConfig("ced-small", embed_dim=384, num_heads=6),
    "ced-base": CedConfig("ced-base", embed_dim=768, num_heads=12),
}


@dataclass(frozen=True)
class CedOutput:
    """Per clip: embed (B, D), logits and probs (B, C); per chunk: one (C_i, D) / (C_i, C)
    tensor per clip (C_i = 1 up to 1012 frames)."""

    embed: Tensor  # mean of chunk embeddings (ML-CLAP)
    logits: Tensor  # mean of chunk logits (official pooling='logit')
    probs: Tensor  # mean of chunk sigmoids (official default output)
    chunk_embeds: tuple[Tensor, ...]
    chunk_logits: tuple[Tensor, ...]


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)  # rows laid out [q; k; v], each head-major
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, N, D)
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, D/H)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D/H), scale (D/H)^-0.5
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm transformer block; LayerNorm eps 1e-6 as in CED."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, dim * mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:  # (B, N, D)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, M, T) -> (B, D, M/16, T//16)
        return self.proj(x)


WaveBatch = Tensor | Sequence[Tensor]


class CedEncoder(nn.Module):
    """CED: 16 kHz waveforms in, clip embeddings (ML-CLAP pooling) and AudioSet logits out.

    Every public method takes a (B, N) tensor or a list of 1-D tensors of any lengths >= 2400
    samples. In eval mode each clip gets the result it would get alone (up to float rounding):
    the dB floor is per clip, and clips are bucketed by length instead of being zero-padded
    together. In train mode init_bn uses batch statistics, as in CED. Chunking of inputs over
    1012 frames follows `CedConfig.drop_full_last_chunk`.
    """

    def __init__(self, cfg: CedConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p, n_mels = cfg.embed_dim, cfg.patch_size, cfg.frontend.n_mels
        # Registration order reproduces the official state_dict order (keys_ced-*.json).
        self.time_pos_embed = nn.Parameter(torch.randn(1, d, 1, cfg.target_length // p) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, d, n_mels // p, 1) * 0.02)
        # The Sequential indices keep the official keys `front_end.0.*` and `init_bn.1.*`. CED
        # normalises each mel bin with a BatchNorm2d between two rearranges; BatchNorm1d over
        # (B, mels, T) is the same operation with the same parameters.
        self.front_end = nn.Sequential(CedLogMel(cfg.frontend))
        self.init_bn = nn.Sequential(nn.Identity(), nn.BatchNorm1d(n_mels, momentum=0.01))
        self.patch_embed = _PatchEmbed(d, p)
        self.blocks = nn.ModuleList(
            _Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        # The head LayerNorm keeps torch's default eps 1e-5, unlike the blocks (as in CED).
        self.outputlayer = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.num_classes))
        self.apply(_init_linear)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def min_samples(self) -> int:
        """Shortest clip that yields one time patch (16 frames = 2400 samples)."""
        return (self.cfg.patch_size - 1) * self.cfg.frontend.hop_length

    def forward(self, waves: WaveBatch) -> Tensor:
        return self.embed(waves)

    def embed(self, waves: WaveBatch) -> Tensor:
        """Retrieval embedding (B, D): mean of the final-norm tokens, then mean over chunks."""
        return self.encode(waves).embed

    def logits(self, waves: WaveBatch) -> Tensor:
        """Pre-sigmoid AudioSet logits (B, 527), averaged over chunks as official CED does."""
        return self.encode(waves).logits

    def encode(self, waves: WaveBatch) -> CedOutput:
        clips = self._as_clips(waves)
        segments, owner = [], []
        for i, z in enumerate(self._normalised_mels(clips)):
            chunks = self._chunks(z)
            segments += chunks
            owner += [i] * len(chunks)
        seg_embeds = self._embed_segments(segments)  # (S, D)
        seg_logits = self.outputlayer(seg_embeds)  # (S, C)
        bounds = torch.tensor(owner).bincount(minlength=len(clips)).tolist()
        chunk_embeds = seg_embeds.split(bounds)
        chunk_logits = seg_logits.split(bounds)
        return CedOutput(
            embed=torch.stack([e.mean(0) for e in chunk_embeds]),
            logits=torch.stack([lg.mean(0) for lg in chunk_logits]),
            probs=torch.stack([lg.sigmoid().mean(0) for lg in chunk_logits]),
            chunk_embeds=chunk_embeds,
            chunk_logits=chunk_logits,
        )

    def forward_features(self, z: Tensor) -> Tensor:
        """Normalised mels (S, M, T), at most 1012 frames, to final-norm tokens (S, 4*T//16, D),
        frequency-major (token f * T//16 + t). Frames past the last full patch are ignored."""
        x = self.patch_embed(z[:, None])  # (S, D, 4, t)
        x = x + self.time_pos_embed[..., : x.shape[-1]] + self.freq_pos_embed  # (S, D, 4, t)
        x = x.flatten(2).transpose(1, 2)  # (S, 4*t, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _as_clips(self, waves: WaveBatch) -> list[Tensor]:
        if isinstance(waves, Tensor):
            if waves.dim() != 2:
                raise ValueError(f"expected waveforms (B, N), got shape {tuple(waves.shape)}")
            waves = list(waves)
        device = self.time_pos_embed.device
        clips = [w.to(device) for w in waves]
        for i, w in enumerate(clips):
            if w.dim() != 1 or w.shape[0] < self.min_samples:
                raise ValueError(
                    f"clip {i}: expected a 1-D waveform of at least {self.min_samples} samples "
                    f"(16 frames at 16 kHz), got shape {tuple(w.shape)}"
                )
        if not clips:
            raise ValueError("no clips to encode")
        return clips

    def _normalised_mels(self, clips: list[Tensor]) -> list[Tensor]:
        """init_bn-normalised log-mel (M, T_i) per clip; equal lengths share one front-end call."""
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(clips):
            by_length.setdefault(w.shape[0], []).append(i)
        mels: list[Tensor] = [torch.empty(0)] * len(clips)
        for idx in by_length.values():
            mel = self.front_end(torch.stack([clips[i] for i in idx]))  # (b, M, T) fp32 dB
            z = self.init_bn(mel.to(self.time_pos_embed.dtype))  # (b, M, T)
            for j, i in enumerate(idx):
                mels[i] = z[j]
        return mels

    def _chunks(self, z: Tensor) -> list[Tensor]:
        """Split one normalised mel (M, T) into <= 1012-frame pieces as CED does: inputs up
        to 1012 frames stay whole; longer ones are cut into 1012-frame chunks, the last one
        right-padded with zeros in the normalised domain (the padded columns are attended to
        and pooled, unmasked, as in official CED and ML-CLAP)."""
        length = self.cfg.target_length
        if z.shape[-1] <= length:
            return [z]
        chunks = list(z.split(length, dim=-1))
        short = length - chunks[-1].shape[-1]
        if short:
            chunks[-1] = F.pad(chunks[-1], (0, short))  # (M, 1012)
        elif self.cfg.drop_full_last_chunk:
            chunks.pop()
        return chunks

    def _embed_segments(self, segments: list[Tensor]) -> Tensor:
        """Token means (S, D), batching segments with equal patch counts (no padding)."""
        p = self.cfg.patch_size
        buckets: dict[int, list[int]] = {}
        for i, seg in enumerate(segments):
            buckets.setdefault(seg.shape[-1] // p, []).append(i)
        order, parts = [], []
        for t, idx in buckets.items():
            z = torch.stack([segments[i][:, : t * p] for i in idx])  # (b, M, 16t)
            parts.append(self.forward_features(z).mean(1))  # (b, D)
            order += idx
        inverse = torch.argsort(torch.tensor(order, device=parts[0].device))
        return torch.cat(parts)[inverse]  # (S, D) back in segment order


def _init_linear(module: nn.Module) -> None:
    # CED's init: truncated normal (std 0.02) weights and zero biases for Linear layers.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def create_ced(name: str, **overrides: object) -> CedEncoder:
    """Randomly initialised CED from the registry; `overrides` replace config fields,
    e.g. `create_ced("ced-base", drop_full_last_chunk=True)` for official-parity chunking."""
    if name not in CED_CONFIGS:
        raise KeyError(f"unknown CED model {name!r}; known: {sorted(CED_CONFIGS)}")
    return CedEncoder(replace(CED_CONFIGS[name], **overrides))


# Hugging Face `mispeech/ced-*` prefixes its encoder keys; an older converter used `ced_model.`.
_HF_PREFIXES = ("encoder.", "ced_model.")


def hf_to_original_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Invert the HF converter (hf_key_mapping.md): strip the encoder prefix and restore the
    BatchNorm's `init_bn.1.` index. Keys that match no rule pass through unchanged, so a
    strict load reports them."""
    out = {}
    for key, value in state.items():
        for prefix in _HF_PREFIXES:
            if key.startswith(prefix):
                key = key.removeprefix(prefix)
                if key.startswith("init_bn.") and not key.startswith("init_bn.1."):
                    key = "init_bn.1." + key.removeprefix("init_bn.")
                break
        out[key] = value
    return out


def read_ced_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], bool]:
    """Tensors of an original `.pt` (plain dict, or under a top-level 'model') or of a HF
    safetensors file / directory holding `model.safetensors`; returns (state, is_hf_layout)
    with the state in original key names."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state.get("model"), Mapping):
            state = state["model"]
    is_hf = any(key.startswith(_HF_PREFIXES) for key in state)
    return (hf_to_original_keys(state) if is_hf else dict(state)), is_hf


def load_ced(name: str, path: str | Path, **overrides: object) -> CedEncoder:
    """CED `name` with the weights at `path` (see `read_ced_checkpoint`), in eval mode.

    HF files carry no front-end buffers (their converter drops them); the model keeps its own
    window and filterbank, which equal the official buffers bit for bit.
    """
    model = create_ced(name, **overrides)
    state, is_hf = read_ced_checkpoint(path)
    if is_hf:
        own_front_end = {k: v for k, v in model.state_dict().items() if k.startswith("front_end.")}
        state = {**own_front_end, **state}
    load_state_dict_strict(model, state)
    log.info("loaded %s from %s (%s layout)", name, path, "HF" if is_hf else "original")
    return model.eval()
