"""Waveform augmentations (training/data/augment.py): each one measured on the signal it makes,
and views that are fixed functions of (samples, view, spec)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from atri.training.data.augment import (
    COLOURS,
    AugmentSpec,
    add_noise,
    apply_filter,
    apply_gain,
    apply_reverb,
    augment_view,
    biquad,
    coloured_noise,
    crop_and_shift,
    room_impulse,
)

SR = 16000
# A spec that does nothing: tests switch on one step at a time.
NOTHING = AugmentSpec(gain_db=(0.0, 0.0), crop_prob=0.0, eq_prob=0.0, reverb_prob=0.0,
                      noise_prob=0.0)


def tone(hz: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def db(x: np.ndarray, ref: np.ndarray) -> float:
    """Level of x relative to ref, by RMS, in dB."""
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))
                               / np.sqrt(np.mean(ref.astype(np.float64) ** 2))))


def music(seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (tone(330, seconds) + 0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.mark.parametrize("gain", [-12.0, -3.5, 0.0, 6.0])
def test_gain_in_db(gain: float) -> None:
    clean = music()
    assert db(apply_gain(clean, gain), clean) == pytest.approx(gain, abs=1e-4)
    view = augment_view(clean, SR, 1, dataclasses.replace(NOTHING, gain_db=(gain, gain)))
    assert db(view, clean) == pytest.approx(gain, abs=1e-4)


@pytest.mark.parametrize(("kind", "stop_hz", "pass_hz"), [
    ("lowpass", 6000.0, 200.0), ("highpass", 100.0, 5000.0),
])
def test_pass_filters_attenuate_the_stop_band(kind: str, stop_hz: float, pass_hz: float) -> None:
    b, a = biquad(kind, 1000.0, SR)
    # a second-order filter: 12 dB per octave past the corner, ~0 dB in the pass band
    assert db(apply_filter(tone(stop_hz), b, a)[SR // 4:], tone(stop_hz)[SR // 4:]) < -20
    assert abs(db(apply_filter(tone(pass_hz), b, a)[SR // 4:], tone(pass_hz)[SR // 4:])) < 1


@pytest.mark.parametrize("gain", [-12.0, 9.0])
def test_shelves_and_peak_reach_their_gain(gain: float) -> None:
    def response(kind: str, corner: float, probe: float) -> float:
        x = tone(probe)
        return db(apply_filter(x, *biquad(kind, corner, SR, gain))[SR // 4:], x[SR // 4:])

    assert response("lowshelf", 500.0, 60.0) == pytest.approx(gain, abs=0.5)
    assert response("lowshelf", 500.0, 6000.0) == pytest.approx(0.0, abs=0.5)
    assert response("highshelf", 2000.0, 7000.0) == pytest.approx(gain, abs=1.0)
    assert response("highshelf", 2000.0, 100.0) == pytest.approx(0.0, abs=0.5)
    assert response("peak", 1000.0, 1000.0) == pytest.approx(gain, abs=0.2)
    assert response("peak", 1000.0, 7000.0) == pytest.approx(0.0, abs=1.0)


def test_unknown_filter_refused() -> None:
    with pytest.raises(ValueError, match="notch"):
        biquad("notch", 1000.0, SR)


def schroeder_rt60(ir: np.ndarray, sr: int) -> float:
    """RT60 from the backward-integrated energy decay, fitted between -5 and -25 dB (T20)."""
    edc = np.cumsum((ir.astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    t = np.arange(len(ir)) / sr
    fit = (edc_db <= -5) & (edc_db >= -25)
    slope = np.polyfit(t[fit], edc_db[fit], 1)[0]  # dB per second
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_room_impulse_decays_at_its_rt60(rt60: float) -> None:
    ir = room_impulse(rt60, SR, np.random.default_rng(1))
    assert len(ir) == int(rt60 * SR) and np.sum(ir.astype(np.float64) ** 2) == pytest.approx(1)
    assert schroeder_rt60(ir, SR) == pytest.approx(rt60, rel=0.15)


def test_reverb_lengthens_the_decay() -> None:
    burst = np.zeros(2 * SR, dtype=np.float32)
    burst[: SR // 10] = tone(500, 0.1)  # 100 ms of sound, then silence
    wet = apply_reverb(burst, room_impulse(0.8, SR, np.random.default_rng(2)), wet_db=-3.0)
    after = slice(SR // 10 + SR // 20, SR)  # 50 ms after the burst ended, up to 1 s
    assert np.abs(burst[after]).max() == 0
    assert db(wet[after], burst[: SR // 10]) > -30  # still sounding: the room rings on
    late = slice(SR // 10 + int(0.6 * SR), SR)
    assert db(wet[late], wet[after]) < -5  # and dies away
    assert len(wet) == len(burst)


@pytest.mark.parametrize("colour", COLOURS)
@pytest.mark.parametrize("snr", [0.0, 10.0, 24.0])
def test_noise_at_the_drawn_snr(colour: str, snr: float) -> None:
    clean = music()
    noisy = add_noise(clean, coloured_noise(len(clean), colour, np.random.default_rng(3)), snr)
    assert db(clean, noisy - clean) == pytest.approx(snr, abs=0.5)
    spec = dataclasses.replace(NOTHING, noise_prob=1.0, snr_db=(snr, snr))
    view = augment_view(clean, SR, 5, spec)
    assert db(clean, view - clean) == pytest.approx(snr, abs=0.5)


@pytest.mark.parametrize(("colour", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_colour_is_its_spectral_slope(colour: str, slope: float) -> None:
    noise = coloured_noise(2**16, colour, np.random.default_rng(4))
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.arange(len(power))
    band = (freqs > 50) & (freqs < 20000)
    fitted = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.1)
    assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0)


def test_crop_and_shift() -> None:
    wave = np.arange(1, 101, dtype=np.float32)
    assert np.array_equal(crop_and_shift(wave, 30, 10, 0), wave[10:40])
    later = crop_and_shift(wave, 30, 10, 5)
    assert len(later) == 30 and (later[:5] == 0).all() and np.array_equal(later[5:], wave[10:35])
    earlier = crop_and_shift(wave, 30, 10, -5)
    assert (earlier[25:] == 0).all() and np.array_equal(earlier[:25], wave[15:40])


def test_crop_in_a_view_keeps_the_drawn_fraction() -> None:
    clean = music()
    spec = dataclasses.replace(NOTHING, crop_prob=1.0, crop_fraction=(0.5, 0.5))
    assert len(augment_view(clean, SR, 1, spec)) == len(clean) // 2
    spec = dataclasses.replace(NOTHING, crop_prob=1.0, crop_fraction=(0.6, 0.9))
    lengths = {len(augment_view(clean, SR, v, spec)) for v in range(1, 9)}
    assert len(lengths) > 1 and all(0.6 * len(clean) - 1 <= n <= 0.9 * len(clean)
                                    for n in lengths)


def test_views_are_fixed_functions_of_samples_view_and_spec() -> None:
    clean = music()
    views = [augment_view(clean, SR, v) for v in range(1, 7)]
    for v, view in enumerate(views, start=1):
        assert np.array_equal(view, augment_view(clean.copy(), SR, v))  # the same, twice
        assert view.dtype == np.float32 and np.isfinite(view).all() and len(view) <= len(clean)
    assert all(not np.array_equal(views[0][: len(w)], w[: len(views[0])]) for w in views[1:])
    other = dataclasses.replace(AugmentSpec(), version=2)
    assert other.hash() != AugmentSpec().hash()
    assert not np.array_equal(augment_view(clean, SR, 1, other), views[0])
    moved = clean.copy()
    moved[0] += 1e-3  # other samples: another draw
    assert not np.array_equal(augment_view(moved, SR, 1)[1:], views[0][1:])


def test_view_zero_is_the_clean_clip_not_an_augmentation() -> None:
    with pytest.raises(ValueError, match="view 0"):
        augment_view(music(), SR, 0)
