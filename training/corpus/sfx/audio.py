"""Decoding the packages' recordings into the corpus's clip format: mono, 44.1 kHz,
at most CLIP_MAX_SECONDS (the start kept), 16-bit FLAC.

libsndfile reads wav, flac and ogg/vorbis; WavPack (`.wv`, teeworlds), MP3 (scratch) and
anything else it refuses go through ffmpeg (the binary of the imageio-ffmpeg wheel, a project
dependency, else one on PATH) into a temporary float WAV that libsndfile then reads, so
both paths share one downmix and one resampler (soxr, as atri.training.data.audio_io does).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from atri.training.corpus.render import SAMPLE_RATE
from atri.training.data.audio_io import AudioDecodeError, decode
from atri.training.fileio import atomic_path

CLIP_MAX_SECONDS = 10.0  # long ambient loops keep their first 10 s
SILENCE_DBFS = -60.0  # a clip whose peak stays below this is dropped as `silent`
MIN_SECONDS = 0.05  # shorter is a click of nothing, dropped as `too_short`
# Straight to ffmpeg: libsndfile has no WavPack reader, and for an MP3 without a Xing header
# its frame count is a bitrate estimate (scratch's Cat.mp3: 44673 announced, 21888 decoded),
# which the truncation check would take for a cut-off file.
FFMPEG_SUFFIXES = {".wv", ".mp3"}
FFMPEG_TIMEOUT_S = 120


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise AudioDecodeError(
                "no ffmpeg: pip install imageio-ffmpeg (a project dependency) or "
                "apt-get install ffmpeg"
            ) from None
        return exe


def _decode_ffmpeg(path: Path) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="atri-sfx-") as tmp:
        wav = Path(tmp) / "decoded.wav"
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map_metadata", "-1",
               "-bitexact", "-c:a", "pcm_f32le", "-f", "wav", "-y", str(wav)]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise AudioDecodeError(f"{path}: ffmpeg timed out after {FFMPEG_TIMEOUT_S} s") from exc
        if done.returncode != 0 or not wav.is_file():
            reason = done.stderr.decode(errors="replace").strip()[-300:]
            raise AudioDecodeError(f"{path}: ffmpeg cannot decode it: {reason}")
        return decode(wav, SAMPLE_RATE, name=str(path), max_seconds=CLIP_MAX_SECONDS)


def wave_ogg_payload(path: Path) -> bytes | None:
    """The Ogg stream inside a RIFF/WAVE file of the old Vorbis ACM format tags (lmms
    ships five such `.ogg` files): neither libsndfile nor ffmpeg reads the wrapper, but
    the `data` chunk is a plain Ogg Vorbis stream."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while chunk := f.read(8):
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                data = f.read(size)
                return data if data[:4] == b"OggS" else None
            f.seek(size + (size & 1), 1)  # RIFF chunks are padded to even sizes
    return None


def load_source(path: Path) -> tuple[np.ndarray, float | None]:
    """(mono float32 at SAMPLE_RATE, cropped to CLIP_MAX_SECONDS; the source's full length
    in seconds when the header knows it). Raises AudioDecodeError naming the file."""
    seconds = None
    info = _sf_info(path)
    if (ogg := wave_ogg_payload(path)) is not None:
        wave = decode(ogg, SAMPLE_RATE, name=str(path), max_seconds=CLIP_MAX_SECONDS)
    elif info is None:
        wave = _decode_ffmpeg(path)
    else:
        # A file libsndfile recognises but cannot finish (truncated) is an error, not
        # handed to ffmpeg, which would quietly return the readable prefix.
        seconds = info.frames / info.samplerate if 0 < info.frames < 2**62 else None
        wave = decode(path, SAMPLE_RATE, max_seconds=CLIP_MAX_SECONDS)
    if not np.isfinite(wave).all():
        raise AudioDecodeError(f"{path}: decoded samples hold NaN or infinity")
    return wave[: int(CLIP_MAX_SECONDS * SAMPLE_RATE)], seconds


def _sf_info(path: Path) -> sf._SoundFileInfo | None:
    """libsndfile's view of the file, or None for a format it does not know (ffmpeg's turn)."""
    if path.suffix.lower() in FFMPEG_SUFFIXES:
        return None
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return None


def to_int16(wave: np.ndarray) -> np.ndarray:
    """float32 in about [-1, 1] -> int16. A decoded lossy file may overshoot full scale:
    scale it down rather than clip it."""
    peak = float(np.abs(wave).max()) if len(wave) else 0.0
    if peak > 1.0:
        wave = wave / peak
    return np.round(wave.astype(np.float64) * 32767.0).astype(np.int16)


def samples_sha256(samples: np.ndarray) -> str:
    """Identity of a clip's audio: the hash of its int16 samples (what the FLAC holds), so
    the same sound shipped twice in other containers or encodings collapses to one clip."""
    return hashlib.sha256(np.ascontiguousarray(samples, dtype="<i2").tobytes()).hexdigest()


def peak_dbfs(samples: np.ndarray) -> float:
    peak = int(np.abs(samples.astype(np.int32)).max()) if len(samples) else 0
    return -np.inf if peak == 0 else 20 * np.log10(peak / 32767.0)


def write_flac(path: Path, samples: np.ndarray) -> None:
    """16-bit mono FLAC, atomically (a crash never leaves half a clip under its name). A file
    that already holds these samples is left alone: its unchanged mtime keeps the feature
    cache's entry for it valid across rebuilds."""
    if path.is_file() and _holds(path, samples):
        return
    with atomic_path(path) as tmp:
        sf.write(str(tmp), samples, SAMPLE_RATE, subtype="PCM_16", format="FLAC")


def _holds(path: Path, samples: np.ndarray) -> bool:
    try:
        data, sr = sf.read(str(path), dtype="int16")
    except (sf.LibsndfileError, RuntimeError):  # a damaged file is simply rewritten
        return False
    return sr == SAMPLE_RATE and np.array_equal(data, samples)


def read_flac(path: Path) -> np.ndarray:
    """A corpus clip as float32 in [-1, 1] (int16 / 32768, exactly as written)."""
    data, sr = sf.read(str(path), dtype="int16")
    if sr != SAMPLE_RATE:
        raise AudioDecodeError(f"{path}: sample rate {sr}, expected {SAMPLE_RATE}")
    return data.astype(np.float32) / 32768.0


@dataclass(frozen=True)
class Decoded:
    """What a worker reports about one source: the clip's identity and size, or why it
    was dropped. Samples stay on disk; only this crosses the process boundary."""

    key: str  # package/relpath
    sha256: str | None
    seconds: float
    source_seconds: float | None
    peak_dbfs: float
    dropped: str | None  # `silent` | `too_short` | None


def decode_one(key: str, path: Path, out_path: Path) -> Decoded:
    wave, source_seconds = load_source(path)
    samples = to_int16(wave)
    seconds = len(samples) / SAMPLE_RATE
    peak = peak_dbfs(samples)
    dropped = "too_short" if seconds < MIN_SECONDS else "silent" if peak < SILENCE_DBFS else None
    sha = None
    if dropped is None:
        sha = samples_sha256(samples)
        write_flac(out_path, samples)
    return Decoded(key, sha, round(seconds, 4), source_seconds, round(float(peak), 2), dropped)


def decode_shard(items: list[tuple[str, str, str]]) -> list[Decoded]:
    """Worker entry: (key, source path, output FLAC path) per item, in order."""
    return [decode_one(key, Path(src), Path(dst)) for key, src, dst in items]
