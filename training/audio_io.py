"""Audio decoding: any file libsndfile reads (wav, flac, ogg/vorbis, opus, mp3) to mono
float32 at a requested sample rate, resampled with soxr (a real band-limited resampler,
not linear interpolation)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr


class AudioDecodeError(ValueError):
    """The input is not audio that any of our decoders can read."""


def to_mono(data: np.ndarray) -> np.ndarray:
    """(N,) or (N, channels) -> (N,) float32, channels averaged."""
    if data.ndim == 2:
        data = data.mean(axis=1)
    return np.ascontiguousarray(data, dtype=np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """(N,) float32 at orig_sr -> (M,) float32 at target_sr (soxr 'HQ')."""
    if orig_sr == target_sr:
        return wave
    return soxr.resample(wave, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def decode(
    source: str | os.PathLike | BinaryIO | bytes, sample_rate: int, name: str | None = None
) -> np.ndarray:
    """Decode `source` to mono float32 at `sample_rate`.

    Raises AudioDecodeError naming the file (or `name`) and libsndfile's reason. A file
    whose header promises more frames than it holds (a truncated FLAC, say) is an error:
    libsndfile would otherwise hand back the readable prefix without a word.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<upload>")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with sf.SoundFile(source) as f:
            expected = f.frames
            data = f.read(dtype="float32", always_2d=True)
            orig_sr = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioDecodeError(f"{label}: cannot decode audio: {exc}") from exc
    # libsndfile reports a huge frame count for streams of unknown length (mp3, ogg
    # without a seek table); only a finite, known count can prove truncation.
    if 0 < expected < 2**62 and len(data) < expected:
        raise AudioDecodeError(
            f"{label}: truncated audio: header says {expected} frames, decoded {len(data)}"
        )
    return resample(to_mono(data), orig_sr, sample_rate)


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read an audio file to mono float32 at `sample_rate`."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"{path}: audio file not found")
    return decode(path, sample_rate)
