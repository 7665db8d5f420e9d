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

# libsndfile reports an absurd frame count for streams of unknown length
UNKNOWN_FRAMES = 2**62
BLOCK_SAMPLES = 1 << 18  # samples (frames x channels) per read: bounds a block's memory
# Without a Xing/Info header libsndfile estimates an MP3's frame count from its size (a
# CBR file came out 0.3 % long): a shortfall within this fraction is that estimate's
# error, not a cut. (A VBR file without the header is worse: libsndfile stops at its
# low estimate, so such a file decodes short without an error.)
MP3_ESTIMATE_SLACK = 0.01


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
    source: str | os.PathLike | BinaryIO | bytes,
    sample_rate: int,
    name: str | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode `source` to mono float32 at `sample_rate`.

    Raises AudioDecodeError naming the file (or `name`) and libsndfile's reason. A file
    whose header promises more frames than it holds (a truncated FLAC, say) is an error:
    libsndfile would otherwise hand back the readable prefix without a word.

    Memory stays bounded by the output, whatever the header claims: the file is read in
    blocks, each mixed to mono and fed to a streaming resampler (bit-identical to one-shot
    soxr). With `max_seconds`, reading stops after `max_seconds + 1` s, so a longer file
    (or one of unknown length, which a header can claim) returns a prefix longer than
    `max_seconds` for the caller to refuse.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<upload>")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with sf.SoundFile(source) as f:
            expected, orig_sr = f.frames, f.samplerate
            slack = MP3_ESTIMATE_SLACK * expected if f.format == "MP3" else 0
            limit = None if max_seconds is None else int((max_seconds + 1.0) * orig_sr)
            wave, read = _read_mono(f, sample_rate, limit)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioDecodeError(f"{label}: cannot decode audio: {exc}") from exc
    # libsndfile reports a huge frame count for streams of unknown length (ogg without
    # a seek table); only a finite, known count can prove truncation.
    complete = limit is None or read <= limit
    if complete and 0 < expected < UNKNOWN_FRAMES and read < expected - slack:
        raise AudioDecodeError(
            f"{label}: truncated audio: header says {expected} frames, decoded {read}"
        )
    return wave


def _read_mono(f: sf.SoundFile, sample_rate: int, limit: int | None) -> tuple[np.ndarray, int]:
    """(mono float32 at sample_rate, frames read) of an open file, read block by block;
    with `limit`, stops once more than `limit` frames were read."""
    block = max(1, BLOCK_SAMPLES // max(f.channels, 1))  # frames per read
    stream = None
    if f.samplerate != sample_rate:
        stream = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
    parts: list[np.ndarray] = []
    read = 0
    while limit is None or read <= limit:
        wanted = block if limit is None else min(block, limit + 1 - read)
        data = f.read(wanted, dtype="float32", always_2d=True)  # (n, channels)
        if not len(data):
            break
        read += len(data)
        mono = to_mono(data)  # (n,)
        parts.append(stream.resample_chunk(mono) if stream is not None else mono)
    if stream is not None:
        parts.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    wave = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32), read


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read an audio file to mono float32 at `sample_rate`."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"{path}: audio file not found")
    return decode(path, sample_rate)
