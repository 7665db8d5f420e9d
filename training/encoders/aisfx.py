"""aisfx: an optional pretrained sound-effects CNN as an audio backbone.

Re-implements the inference path of the PyPI package ``aisfx`` 0.1.2 (model "X-Sequential-CE";
A.B. Ma and A. Lerch, "Representation Learning for the Automatic Indexing of Sound Effects
Libraries", ISMIR 2022) in plain torch: the Essentia log-mel front-end the weights were trained
with, 100-frame blocking, and the 9-layer CNN. Only the packaged weights are read; no package code
runs. The weights are CC BY 4.0 (c) 2022 A.B. Ma and A. Lerch; see docs/aisfx.md for attribution.
Every constant below is from the shared spec ``aisfx_reference/frontend.md`` (section in brackets).

Clip embedding = arithmetic mean of the block embeddings (the package stops at blocks). The
embeddings are not L2-normalised. Input must already be 44.1 kHz mono: the encoder never
resamples, because resampler stop-band leakage is visible through ``log10(1e4·x + 1)``.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atri.training.encoders.strict_load import load_state_dict_strict

logger = logging.getLogger(__name__)

# sha256 of aisfx-0.1.2's models/checkpoint.pth, the file the parity tests were made with
AISFX_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"
_NET_PREFIX = "embedding_net."
_HEAD_PREFIX = "fc."  # per-dataset classifier heads: not part of the embedding


@dataclass(frozen=True)
class AisfxConfig:
    """The front-end, blocking and CNN of aisfx 0.1.2 (frontend.md §2, §3, §5)."""

    sample_rate: int = 44100
    n_fft: int = 2048  # frame = FFT size, symmetric Hann, no zero padding (§2.3-4)
    hop: int = 1024
    n_mels: int = 96
    f_min: float = 0.0
    f_max: float = 22050.0
    log_scale: float = 1e4  # logmel = log10(log_scale * mel + 1) (§2.6)
    feature_max: float = 9.457798957824707  # 'original' min-max scaling, min 0 (§2.8)
    block_frames: int = 100  # ~2.32 s per block (§3)
    block_hop: int = 50
    widths: tuple[int, ...] = (64, 128, 256, 512)

    @property
    def dim(self) -> int:
        return self.widths[-1]


AISFX = AisfxConfig()


# ---------------------------------------------------------------- front-end


def _hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)  # HTK (§2.5b)


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(cfg: AisfxConfig = AISFX) -> Tensor:
    """Essentia's ``MelBands`` matrix W, (n_mels, n_fft // 2 + 1) float32, band = W @ |X|².

    HTK mel, n_mels + 2 edges equally spaced in mel; triangles linear in *mel* sampled at the
    bin frequencies k·sr/n_fft inside [ceil(fe[i]/δ), floor(fe[i+2]/δ)]; each row divided by
    its own sum ('unit_sum'). Built in float64 (§2.5b-e).
    """
    f64 = torch.float64
    n_bins = cfg.n_fft // 2 + 1
    delta = cfg.sample_rate / cfg.n_fft  # Hz per bin
    m_lo, m_hi = _hz_to_mel(torch.tensor([cfg.f_min, cfg.f_max], dtype=f64))
    edges = _mel_to_hz(torch.linspace(0, 1, cfg.n_mels + 2, dtype=f64) * (m_hi - m_lo) + m_lo)
    edges[0], edges[-1] = cfg.f_min, cfg.f_max  # exact ends, no round-trip error
    m_edge = _hz_to_mel(edges)  # (M+2,)
    freqs = torch.arange(n_bins, dtype=f64) * delta  # (K,)
    m_bin = _hz_to_mel(freqs)  # (K,)
    lo, mid, hi = m_edge[:-2, None], m_edge[1:-1, None], m_edge[2:, None]  # (M, 1) each
    rising = (m_bin - lo) / (mid - lo)  # (M, K)
    falling = (hi - m_bin) / (hi - mid)  # (M, K)
    w = torch.where(freqs < edges[1:-1, None], rising, falling)  # (M, K)
    k = torch.arange(n_bins, dtype=f64)
    first, last = torch.ceil(edges[:-2, None] / delta), torch.floor(edges[2:, None] / delta)
    inside = (k >= first) & (k <= last)  # (M, K)
    w = torch.where(inside, w, torch.zeros((), dtype=f64))
    sums = w.sum(dim=1, keepdim=True)  # (M, 1)
    if bool((sums <= 0).any()):
        raise ValueError(f"{int((sums <= 0).sum())} mel bands cover no FFT bin; use fewer bands")
    return (w / sums).to(torch.float32)


def num_frames(n_samples: int, cfg: AisfxConfig = AISFX) -> int:
    """Essentia FrameCutter count: the last frame is the first centred at or after the end."""
    return math.ceil(n_samples / cfg.hop) + 1


class AisfxFrontend(nn.Module):
    """Scaled log-mel features of the aisfx Essentia path, in fp32 (frontend.md §2).

    wave (B, N) at 44.1 kHz -> features (B, T, 96), T = ceil(N / 1024) + 1, layout (frames, mels).
    Samples are clipped to [-1, 1] as Essentia's loader does. Frame t covers samples
    [1024·t − 1024, 1024·t + 1024) with zeros outside the clip, so a frame whose window lies past
    the end of the clip is exactly 0 (silence), as are zero-padding rows. Then
    features = log10(1e4 · W|rfft(hann_sym · frame)|² + 1) / 9.4578 (no clipping to [0, 1]).
    """

    def __init__(self, cfg: AisfxConfig = AISFX) -> None:
        super().__init__()
        self.cfg = cfg
        window = torch.hann_window(cfg.n_fft, periodic=False, dtype=torch.float32)
        self.register_buffer("window", window, persistent=False)  # (n_fft,)
        self.register_buffer("mel_fb", mel_filterbank(cfg), persistent=False)  # (M, K)

    def forward(self, wave: Tensor) -> Tensor:
        cfg = self.cfg
        if wave.dim() != 2 or wave.shape[-1] == 0:
            raise ValueError(f"expected a non-empty (B, N) waveform, got shape {tuple(wave.shape)}")
        n = wave.shape[-1]
        t = num_frames(n, cfg)
        half = cfg.n_fft // 2
        x = wave.to(torch.float32).clamp(-1.0, 1.0)  # (B, N)
        x = F.pad(x, (half, cfg.hop * (t - 1) + half - n))  # (B, hop*(T-1) + n_fft)
        frames = x.unfold(-1, cfg.n_fft, cfg.hop)  # (B, T, n_fft)
        spec = torch.fft.rfft(frames * self.window)  # (B, T, K)
        power = spec.real.square() + spec.imag.square()  # (B, T, K)
        mel = power @ self.mel_fb.T  # (B, T, M)
        return torch.log10(cfg.log_scale * mel + 1.0) / cfg.feature_max  # (B, T, M)


def to_blocks(features: Tensor, cfg: AisfxConfig = AISFX) -> Tensor:
    """Blocks the CNN sees: (T, M) -> (n_blocks, 100, M), block b = rows [50b, 50b + 100).

    T >= 100: floor((T − 100) / 50) + 1 blocks; trailing frames after the last full block are
    dropped, as in the package. T < 100: one block, the T rows then zero rows (= trailing
    silence). The package asserts T > 50; we pad any T >= 1 because the service accepts clips
    of 0.1 s (T = 6). Those embeddings have no reference; the CNN pools time by max, not mean,
    so the padding is not averaged in.
    """
    t = features.shape[0]
    if t < cfg.block_frames:
        features = F.pad(features, (0, 0, 0, cfg.block_frames - t))  # (100, M)
    blocks = features.unfold(0, cfg.block_frames, cfg.block_hop)  # (n_blocks, M, 100)
    return blocks.transpose(1, 2)  # (n_blocks, 100, M)


# ---------------------------------------------------------------- CNN


class _ConvBlock(nn.Module):
    """(conv 3×3 no bias -> BN -> ReLU) ×2, then 2×2 max-pool unless ``pool`` is False."""

    def __init__(self, c_in: int, c_out: int, pool: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, 2) if self.pool else x


class AisfxCNN(nn.Module):
    """The aisfx ``EmbeddingNet`` (frontend.md §5): blocks (B, 100, 96) -> (B, 512), all >= 0.

    Four conv blocks (64/128/256/512, the last without pooling), mean over mels, max over time.
    Parameter names match the checkpoint's ``embedding_net.*`` keys without the prefix.
    """

    def __init__(self, cfg: AisfxConfig = AISFX) -> None:
        super().__init__()
        widths = (1, *cfg.widths)
        for i in range(len(cfg.widths)):
            last = i == len(cfg.widths) - 1
            self.add_module(f"conv_block{i + 1}", _ConvBlock(widths[i], widths[i + 1], not last))

    def forward(self, blocks: Tensor) -> Tensor:
        x = blocks.unsqueeze(1)  # (B, 1, 100, 96)
        for block in self.children():
            x = block(x)  # (B, 512, 12, 12) after the last
        x = x.mean(dim=3)  # (B, 512, 12) mean over mels
        return x.amax(dim=2)  # (B, 512) max over time


def load_cnn_state(cnn: AisfxCNN, state: Mapping[str, Tensor]) -> None:
    """Strict load; a missing, unexpected or mis-shaped key raises ValueError naming it."""
    load_state_dict_strict(cnn, state, "the aisfx CNN")


# ---------------------------------------------------------------- checkpoint


def aisfx_checkpoint_path() -> Path:
    """The packaged ``aisfx/models/checkpoint.pth``, located without importing aisfx
    (its ``__init__`` imports Essentia and librosa)."""
    spec = importlib.util.find_spec("aisfx")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("aisfx is not installed: pip install --no-deps aisfx==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "checkpoint.pth"
    if not path.is_file():
        raise FileNotFoundError(f"aisfx checkpoint not found at {path}")
    return path


def _checkpoint_globals() -> list:
    """The non-tensor globals in the checkpoint pickle (frontend.md §6): ``ds_dict`` holds
    numpy int64 scalars, pickled under numpy 1's module name."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    return [(scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType, codecs.encode]


def load_aisfx_state(
    path: str | Path | None = None, expected_sha256: str | None = AISFX_SHA256
) -> dict[str, Tensor]:
    """The CNN weights from an aisfx checkpoint, keys without ``embedding_net.``.

    Loaded with ``weights_only=True`` and only the globals above allowed, for this call only; any
    other global raises ``pickle.UnpicklingError`` before it is built. ``expected_sha256=None``
    accepts other files of the same layout (e.g. fine-tuned ones); the default pins 0.1.2.
    """
    path = Path(path) if path is not None else aisfx_checkpoint_path()
    if expected_sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected_sha256:
            raise ValueError(f"{path}: sha256 {digest}, expected {expected_sha256} (aisfx 0.1.2)")
    with torch.serialization.safe_globals(_checkpoint_globals()):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], Mapping)):
        raise ValueError(f"{path}: expected (state_dict, ds_dict), got {type(obj).__name__}")
    state = obj[0]
    stray = sorted(k for k in state if not k.startswith((_NET_PREFIX, _HEAD_PREFIX)))
    if stray:
        raise ValueError(f"{path}: unexpected keys {stray}")
    logger.info("loaded aisfx weights from %s", path)
    return {k.removeprefix(_NET_PREFIX): v for k, v in state.items() if k.startswith(_NET_PREFIX)}


# ---------------------------------------------------------------- encoder


class AisfxEncoder(nn.Module):
    """44.1 kHz waveforms -> (B, 512) aisfx clip embeddings = mean of the block embeddings.

    ``forward`` is the differentiable path for equal-length batches (B, N); ``embed`` is the
    inference path for clips of any lengths. Both give each clip the embedding it gets alone
    (up to float rounding: the CNN's batch composition differs).
    """

    def __init__(self, cfg: AisfxConfig = AISFX) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.dim = cfg.dim
        self.frontend = AisfxFrontend(cfg)
        self.cnn = AisfxCNN(cfg)

    @property
    def embed_dim(self) -> int:
        """``dim`` under the name CedEncoder uses."""
        return self.dim

    @property
    def min_samples(self) -> int:
        """Any non-empty clip: shorter than one block is padded with silence (``to_blocks``)."""
        return 1

    def forward(self, wave: Tensor) -> Tensor:
        feats = self.frontend(wave)  # (B, T, M)
        b, t, m = feats.shape
        if t < self.cfg.block_frames:
            feats = F.pad(feats, (0, 0, 0, self.cfg.block_frames - t))  # (B, 100, M)
        blocks = feats.unfold(1, self.cfg.block_frames, self.cfg.block_hop)  # (B, nb, M, 100)
        blocks = blocks.transpose(2, 3).reshape(-1, self.cfg.block_frames, m)  # (B*nb, 100, M)
        return self.cnn(blocks).view(b, -1, self.dim).mean(dim=1)  # (B, 512)

    @torch.inference_mode()
    def embed_blocks(self, wave: Tensor) -> Tensor:
        """One clip (N,) -> its block embeddings (n_blocks, 512), as the package outputs."""
        self._check_eval()
        return self.cnn(to_blocks(self.frontend(_as_clip(wave)[None])[0], self.cfg))

    @torch.inference_mode()
    def embed(self, waves: Sequence[Tensor] | Tensor, max_blocks: int = 32) -> Tensor:
        """Clips (list of (N_i,) or (B, N)) -> (B, 512); the CNN sees at most ``max_blocks``
        blocks at a time, which bounds memory for long clips."""
        self._check_eval()
        if isinstance(waves, Tensor) and waves.dim() != 2:
            raise ValueError(f"expected (B, N) or a list of 1-D clips, got {waves.dim()}-D")
        blocks = [to_blocks(self.frontend(_as_clip(w)[None])[0], self.cfg) for w in waves]
        if not blocks:
            return torch.empty(0, self.dim)
        owner = torch.repeat_interleave(torch.tensor([len(b) for b in blocks]))  # (sum nb,)
        flat = torch.cat(blocks)  # (sum nb, 100, M)
        emb = torch.cat([self.cnn(chunk) for chunk in flat.split(max_blocks)])  # (sum nb, 512)
        total = torch.zeros(len(blocks), self.dim).index_add_(0, owner, emb)  # (B, 512)
        return total / torch.bincount(owner, minlength=len(blocks))[:, None]  # (B, 512)

    def _check_eval(self) -> None:
        # In train mode BatchNorm would use batch statistics: embeddings would depend on the batch.
        if self.training:
            raise RuntimeError("AisfxEncoder.embed needs eval mode: call .eval() first")


def _as_clip(wave: Tensor) -> Tensor:
    if not isinstance(wave, Tensor) or wave.dim() != 1 or wave.numel() == 0:
        shape = tuple(wave.shape) if isinstance(wave, Tensor) else type(wave).__name__
        raise ValueError(f"each clip must be a non-empty 1-D tensor, got {shape}")
    return wave


def load_aisfx_encoder(
    path: str | Path | None = None, expected_sha256: str | None = AISFX_SHA256
) -> AisfxEncoder:
    """The pretrained encoder in eval mode, from the installed aisfx package by default."""
    encoder = AisfxEncoder()
    load_cnn_state(encoder.cnn, load_aisfx_state(path, expected_sha256))
    return encoder.eval()
