"""Seeded waveform augmentations of training audio, one fixed "view" per (clip, index).

A frozen backbone sees each clip's features, not its audio, so augmentation happens once:
view v of a clip is `augment_view(wave, sample_rate, v, spec)`, a pure function of the
decoded samples, v and the spec (whose `version` is bumped whenever the code below
changes what a spec produces), and its features are cached like the clean clip's
(feature_views.py). View 0 is always the clean clip.

A view applies, in the order a recording chain would: crop and shift (another moment of
the sound), EQ (another microphone or speaker), room reverb (another room), background
noise at a drawn SNR (another place), and gain (another recording level). Each step after
crop is taken with its own probability, so views differ in kind, not only in amount.

Noise is synthetic (white, pink or brown), never recorded sound: the recorded sources
that measure transfer (shared spec corpus.md) must stay out of training, and synthetic
noise cannot leak any of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

COLOURS: tuple[str, ...] = ("white", "pink", "brown")
FILTERS: tuple[str, ...] = ("lowshelf", "highshelf", "peak", "lowpass", "highpass")


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges the views are drawn from. Any change of field or code that alters what a
    view holds must change `version`, which is part of `spec_hash` and so of the cache key."""

    version: int = 1
    gain_db: tuple[float, float] = (-12.0, 6.0)
    crop_prob: float = 0.5
    crop_fraction: tuple[float, float] = (0.6, 1.0)  # kept length, of the clip's
    shift_seconds: float = 0.5  # the crop's content moves by up to this, zeros fill in
    eq_prob: float = 0.7
    eq_gain_db: tuple[float, float] = (6.0, 15.0)  # shelf/peak magnitude, boost or cut
    eq_hz: tuple[float, float] = (150.0, 6000.0)  # corner/centre, drawn log-uniformly
    reverb_prob: float = 0.5
    rt60: tuple[float, float] = (0.2, 1.2)  # seconds
    reverb_wet_db: tuple[float, float] = (-12.0, 0.0)  # reverberant vs direct energy
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)

    def hash(self) -> str:
        """sha256 of every field, hex: the spec's share of a view's cache key."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


DEFAULT_SPEC = AugmentSpec()


def view_rng(wave: np.ndarray, view: int, spec: AugmentSpec) -> np.random.Generator:
    """The generator of one view: seeded by the clip's samples (not its path, so a moved
    corpus augments the same way), the view index and the spec."""
    digest = hashlib.sha256(np.ascontiguousarray(wave, dtype=np.float32).tobytes())
    digest.update(f"\0{view}\0{spec.hash()}".encode())
    return np.random.default_rng(np.frombuffer(digest.digest(), dtype=np.uint32))


def apply_gain(wave: np.ndarray, db: float) -> np.ndarray:
    return wave * np.float32(10 ** (db / 20))


def crop_and_shift(wave: np.ndarray, length: int, offset: int, shift: int) -> np.ndarray:
    """wave[offset : offset + length], then moved `shift` samples later (earlier if
    negative) within the same length, zeros filling the gap: the clip keeps `length`."""
    part = wave[offset : offset + length]
    out = np.zeros(length, dtype=np.float32)
    if shift >= 0:
        out[shift:] = part[: max(0, length - shift)]
    else:
        out[: length + shift] = part[-shift:]
    return out


def biquad(kind: str, hz: float, sr: int, gain_db: float = 0.0,
           q: float = 0.707) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) of one RBJ Audio EQ Cookbook biquad (R. Bristow-Johnson), normalised a[0] = 1."""
    w = 2 * np.pi * hz / sr
    cos, alpha = np.cos(w), np.sin(w) / (2 * q)
    amp = 10 ** (gain_db / 40)
    if kind == "lowpass":
        b = [(1 - cos) / 2, 1 - cos, (1 - cos) / 2]
        a = [1 + alpha, -2 * cos, 1 - alpha]
    elif kind == "highpass":
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        a = [1 + alpha, -2 * cos, 1 - alpha]
    elif kind == "peak":
        b = [1 + alpha * amp, -2 * cos, 1 - alpha * amp]
        a = [1 + alpha / amp, -2 * cos, 1 - alpha / amp]
    elif kind in ("lowshelf", "highshelf"):
        sign = 1 if kind == "lowshelf" else -1  # the high shelf is the low one mirrored
        root = 2 * np.sqrt(amp) * alpha
        b = [amp * ((amp + 1) - sign * (amp - 1) * cos + root),
             sign * 2 * amp * ((amp - 1) - sign * (amp + 1) * cos),
             amp * ((amp + 1) - sign * (amp - 1) * cos - root)]
        a = [(amp + 1) + sign * (amp - 1) * cos + root,
             -sign * 2 * ((amp - 1) + sign * (amp + 1) * cos),
             (amp + 1) + sign * (amp - 1) * cos - root]
    else:
        raise ValueError(f"filter {kind!r} is not one of {FILTERS}")
    b_arr, a_arr = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
    return b_arr / a_arr[0], a_arr / a_arr[0]


def apply_filter(wave: np.ndarray, b: np.ndarray, a: np.ndarray) -> np.ndarray:
    return lfilter(b, a, wave.astype(np.float64)).astype(np.float32)


def room_impulse(rt60: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: Gaussian noise under an exponential envelope that falls 60 dB in
    `rt60` seconds (Schroeder's statistical reverb model), unit energy, (rt60 * sr,)."""
    n = max(1, int(rt60 * sr))
    t = np.arange(n) / sr
    envelope = 10 ** (-3 * t / rt60)  # amplitude: -60 dB at t = rt60
    ir = rng.standard_normal(n) * envelope
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)


def fft_convolve(wave: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Linear convolution via the real FFT, cut to len(wave) (the tail past the clip's end
    is dropped, as a fixed-length recording would)."""
    n = len(wave) + len(ir) - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(ir, size), size)
    return out[: len(wave)].astype(np.float32)


def apply_reverb(wave: np.ndarray, ir: np.ndarray, wet_db: float) -> np.ndarray:
    """Direct sound plus the reverberant part `wet_db` relative to it in energy."""
    wet = fft_convolve(wave, ir)
    return wave + wet * np.float32(_rms(wave) / max(_rms(wet), 1e-12) * 10 ** (wet_db / 20))


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """(n,) noise with power spectrum 1/f^k: white k=0, pink k=1, brown k=2, unit RMS."""
    if colour not in COLOURS:
        raise ValueError(f"noise colour {colour!r} is not one of {COLOURS}")
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0  # the DC bin: keep it finite, it is removed below
    spectrum *= freqs ** (-COLOURS.index(colour) / 2)  # amplitude ~ f^(-k/2)
    noise = np.fft.irfft(spectrum, n)
    noise -= noise.mean()
    return (noise / max(_rms(noise), 1e-12)).astype(np.float32)


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """wave + noise scaled so that RMS(wave) / RMS(noise) is `snr_db` in dB."""
    scale = _rms(wave) / max(_rms(noise), 1e-12) * 10 ** (-snr_db / 20)
    return wave + noise * np.float32(scale)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _crop(wave: np.ndarray, sr: int, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    length = max(1, int(len(wave) * rng.uniform(*spec.crop_fraction)))
    offset = int(rng.integers(0, len(wave) - length + 1))
    limit = min(int(spec.shift_seconds * sr), length - 1)
    shift = int(rng.integers(-limit, limit + 1))
    return crop_and_shift(wave, length, offset, shift)


def _eq(wave: np.ndarray, sr: int, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    kind = FILTERS[int(rng.integers(len(FILTERS)))]
    hz = min(_log_uniform(rng, *spec.eq_hz), 0.45 * sr)  # stay below Nyquist
    gain = float(rng.uniform(*spec.eq_gain_db)) * (1 if rng.random() < 0.5 else -1)
    return apply_filter(wave, *biquad(kind, hz, sr, gain))


def augment_view(wave: np.ndarray, sr: int, view: int,
                 spec: AugmentSpec = DEFAULT_SPEC) -> np.ndarray:
    """View `view` (>= 1) of a mono clip `wave` (T,) at `sr`: a fixed function of the
    samples, the view and the spec (module docstring). Returns float32 (T',), T' <= T."""
    if view < 1:
        raise ValueError(f"view {view}: augmented views start at 1 (0 is the clean clip)")
    wave = np.asarray(wave, dtype=np.float32)
    rng = view_rng(wave, view, spec)
    # Every draw is made whether or not its step applies, so one step's probability never
    # shifts the draws of the others.
    draws = {name: (rng.random(), np.random.default_rng(rng.integers(2**63)))
             for name in ("crop", "eq", "reverb", "noise")}
    gain_db = float(rng.uniform(*spec.gain_db))
    if len(wave) > 1 and draws["crop"][0] < spec.crop_prob:
        wave = _crop(wave, sr, spec, draws["crop"][1])
    if draws["eq"][0] < spec.eq_prob:
        wave = _eq(wave, sr, spec, draws["eq"][1])
    if draws["reverb"][0] < spec.reverb_prob:
        sub = draws["reverb"][1]
        ir = room_impulse(float(sub.uniform(*spec.rt60)), sr, sub)
        wave = apply_reverb(wave, ir, float(sub.uniform(*spec.reverb_wet_db)))
    if draws["noise"][0] < spec.noise_prob:
        sub = draws["noise"][1]
        colour = COLOURS[int(sub.integers(len(COLOURS)))]
        noise = coloured_noise(len(wave), colour, sub)
        wave = add_noise(wave, noise, float(sub.uniform(*spec.snr_db)))
    return apply_gain(wave, gain_db).astype(np.float32)
