"""CedLogMel against the official CED log-mels (shared spec ced_reference/) and a naive
float64 filterbank; per-clip top_db makes batching irrelevant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atri.training.encoders.frontend import CedLogMel, LogMelConfig, htk_mel_filterbank


@pytest.fixture(scope="module")
def ref(spec_dir):
    return spec_dir / "ced_reference"


@pytest.fixture(scope="module")
def front_end() -> CedLogMel:
    return CedLogMel()


def _signal(ref, suffix: str) -> torch.Tensor:
    return torch.from_numpy(np.load(ref / f"signal{suffix}.npy"))


@pytest.mark.parametrize("suffix, frames", [("", 1001), ("_2s", 201), ("_25s", 2501)])
def test_matches_official_logmel(ref, front_end, suffix, frames):
    expected = np.load(ref / f"logmel{suffix}.npy")  # (64, T)
    out = front_end(_signal(ref, suffix)[None])  # (1, 64, T)
    assert out.shape == (1, 64, frames) and out.dtype == torch.float32
    assert np.abs(out[0].numpy() - expected).max() <= 1e-2


def test_buffers_equal_official_checkpoint(ref, front_end):
    state = torch.load(ref / "ced-tiny_random.pt", weights_only=True)
    torch.testing.assert_close(
        front_end.mel_scale.fb, state["front_end.0.mel_scale.fb"], rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        front_end.spectrogram.window, state["front_end.0.spectrogram.window"], rtol=0, atol=1e-6
    )


def _naive_htk_fb(n_freqs: int, f_min: float, f_max: float, n_mels: int, sr: int) -> np.ndarray:
    def mel(f: float) -> float:
        return 2595.0 * math.log10(1.0 + f / 700.0)

    def hz(m: float) -> float:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = [
        hz(mel(f_min) + i * (mel(f_max) - mel(f_min)) / (n_mels + 1)) for i in range(n_mels + 2)
    ]
    fb = np.zeros((n_freqs, n_mels))
    for k in range(n_freqs):
        f = k * (sr / 2) / (n_freqs - 1)
        for m in range(n_mels):
            lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
            fb[k, m] = max(0.0, min((f - lo) / (mid - lo), (hi - f) / (hi - mid)))
    return fb


@pytest.mark.parametrize(
    "n_freqs, f_min, f_max, n_mels, sr",
    [(257, 0.0, 8000.0, 64, 16000), (201, 50.0, 7000.0, 40, 16000), (513, 0.0, 16000.0, 80, 32000)],
)
def test_filterbank_matches_naive_formula(n_freqs, f_min, f_max, n_mels, sr):
    fb = htk_mel_filterbank(n_freqs, f_min, f_max, n_mels, sr)
    assert fb.shape == (n_freqs, n_mels)
    assert (
        np.abs(fb.double().numpy() - _naive_htk_fb(n_freqs, f_min, f_max, n_mels, sr)).max() < 1e-4
    )


@pytest.mark.parametrize(
    "n_samples, frames", [(161_760, 1012), (161_920, 1013), (323_680, 2024), (2_400, 16)]
)
def test_num_frames(n_samples, frames):
    assert LogMelConfig().num_frames(n_samples) == frames
    assert CedLogMel()(torch.zeros(1, n_samples) + 0.1).shape[-1] == frames


def test_top_db_floor_is_per_clip(ref, front_end):
    loud = _signal(ref, "_2s")
    quiet = loud * 1e-4  # 80 dB lower
    solo_loud, solo_quiet = front_end(loud[None])[0], front_end(quiet[None])[0]
    # A batch-wide floor (official) would clip the quiet clip; this batch must not.
    assert solo_quiet.min() < solo_loud.max() - 120.0
    batch = front_end(torch.stack([loud, quiet]))
    torch.testing.assert_close(batch[0], solo_loud, rtol=0, atol=1e-5)
    torch.testing.assert_close(batch[1], solo_quiet, rtol=0, atol=1e-5)


def test_top_db_floor_applies_within_a_clip(ref, front_end):
    wave = _signal(ref, "_2s").clone()
    wave[8000:24000] = 0.0  # digital silence -> 10 log10(amin) = -100 dB before the floor
    out = front_end(wave[None])[0]
    assert out.min().item() == pytest.approx(out.max().item() - 120.0, abs=1e-4)
    assert out.min() > -100.0


def test_fp32_under_autocast_and_double_input(ref, front_end):
    wave = _signal(ref, "_2s")[None]
    expected = front_end(wave)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = front_end(wave.double())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


def test_rejects_non_batch_input(front_end):
    with pytest.raises(ValueError, match="B, N"):
        front_end(torch.zeros(16000))
