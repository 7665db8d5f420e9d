"""CED's log-mel front-end in plain torch: power STFT -> HTK mel -> dB with a 120 dB floor.

Reproduces torchaudio's `MelSpectrogram` + `AmplitudeToDB(top_db=120)` as CED configures them
(shared spec `ced_reference/config.md` §1), except that the top_db floor is taken per clip
rather than over the whole batch, so a clip's log-mel never depends on its batch neighbours.
For a batch of one the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LogMelConfig:
    """CED's front-end settings (config.md §1); the defaults are the only copy of them."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    amin: float = 1e-10
    top_db: float = 120.0

    def num_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT: 1 + N // hop (10 s -> 1001)."""
        return 1 + n_samples // self.hop_length


def _hz_to_mel(hz: Tensor | float) -> Tensor | float:
    if isinstance(hz, Tensor):
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def htk_mel_filterbank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int
) -> Tensor:
    """Triangular HTK-scale filters without area normalisation, (n_freqs, n_mels).

    Built in float32 with the same sequence of operations as torchaudio's `melscale_fbanks`
    (linspace in mel, back to Hz, triangles `max(0, min(rising, falling))`), so the result
    matches the `front_end.0.mel_scale.fb` buffer of official checkpoints to float32 rounding.
    """
    freqs = torch.linspace(0, sample_rate // 2, n_freqs)  # (F,)
    mel_pts = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)  # (M+2,) filter edges and centres
    widths = hz_pts[1:] - hz_pts[:-1]  # (M+1,)
    offsets = hz_pts[None, :] - freqs[:, None]  # (F, M+2)
    rising = -offsets[:, :-2] / widths[:-1]  # (F, M)
    falling = offsets[:, 2:] / widths[1:]  # (F, M)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class _PowerSpectrogram(nn.Module):
    """|STFT|^2 with a periodic Hann window, centred with reflect padding, one-sided."""

    def __init__(self, cfg: LogMelConfig) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = cfg.n_fft, cfg.hop_length, cfg.win_length
        self.register_buffer("window", torch.hann_window(cfg.win_length))

    def forward(self, wave: Tensor) -> Tensor:  # (B, N) -> (B, n_fft//2+1, T)
        spec = torch.stft(
            wave,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return spec.abs().pow(2.0)


class _MelScale(nn.Module):
    def __init__(self, cfg: LogMelConfig) -> None:
        super().__init__()
        fb = htk_mel_filterbank(
            cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate
        )
        self.register_buffer("fb", fb)  # (F, M)

    def forward(self, power: Tensor) -> Tensor:  # (B, F, T) -> (B, M, T)
        return torch.matmul(power.transpose(-1, -2), self.fb).transpose(-1, -2)


class CedLogMel(nn.Module):
    """Waveform to CED log-mel in dB, always computed in float32.

    Input: mono 16 kHz waveform (B, N), any float dtype. Output: (B, n_mels=64, T) float32 in
    dB with T = 1 + N // 160, before CED's `init_bn`. Each clip is floored at its own
    max - top_db. The submodule names (`spectrogram.window`, `mel_scale.fb`) follow
    torchaudio's so official checkpoints load without renaming.
    """

    def __init__(self, cfg: LogMelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else LogMelConfig()
        self.spectrogram = _PowerSpectrogram(self.cfg)
        self.mel_scale = _MelScale(self.cfg)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform batch (B, N), got shape {tuple(wave.shape)}")
        # Mixed precision would cost whole dB in quiet bins; CED disables autocast here too.
        with torch.autocast(device_type=wave.device.type, enabled=False):
            mel = self.mel_scale(self.spectrogram(wave.float()))  # (B, M, T)
            db = 10.0 * torch.log10(torch.clamp(mel, min=self.cfg.amin))  # (B, M, T)
            floor = db.amax(dim=(-2, -1), keepdim=True) - self.cfg.top_db  # (B, 1, 1)
            return torch.maximum(db, floor)
