"""Uploaded audio: the request-body size limit, enforced while the body streams in, and
decoding with libsndfile first and ffmpeg as the fallback for the containers browsers
and phones record (webm/opus, m4a/aac), which libsndfile cannot read."""

from __future__ import annotations

import io
import logging
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atri.service.asgi import HttpMiddleware
from atri.service.errors import (
    InvalidAudio,
    PayloadTooLarge,
    UnsupportedAudio,
    error_body,
    without_object_reprs,
)
from atri.training.data.audio_io import UNKNOWN_FRAMES, AudioDecodeError, decode
from atri.training.fileio import atomic_write

log = logging.getLogger(__name__)

# Bodies other than multipart uploads are JSON: a query is at most 1,000 characters, so
# 1 MiB is ample, and it keeps a body of many tiny JSON values (20 MB of "[]," parse
# into ~450 MB of Python objects) from exhausting memory.
MAX_JSON_BYTES = 1 << 20

# ffmpeg reads only these containers (what browsers and phones record, and the common
# audio files): no playlists or concat scripts, which would make it open other files.
FFMPEG_FORMATS = "matroska,webm,mov,mp4,m4a,3gp,ogg,mp3,wav,flac,aac,caf,aiff,w64,amr"


class BodySizeLimit(HttpMiddleware):
    """ASGI middleware: a request body over the limit is answered 413 as soon as the
    limit is crossed — at once when Content-Length announces it, else while streaming —
    so an oversized upload is never read whole. The limit is `max_bytes` for multipart
    uploads and at most MAX_JSON_BYTES for any other body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_bytes
        if not _header(scope, b"content-type").lower().startswith(b"multipart/form-data"):
            limit = min(limit, MAX_JSON_BYTES)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            error = PayloadTooLarge(limit)
            body = error_body(error.code, error.message, error.details)
            response = JSONResponse(body, status_code=413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # an HTTPException: FastAPI's body reader lets it through to the handler
                    raise PayloadTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


def _header(scope: Scope, wanted: bytes) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return value
    return b""


def _content_length(scope: Scope) -> int | None:
    try:
        return int(_header(scope, b"content-length"))
    except ValueError:
        return None


@dataclass(frozen=True)
class DecodedAudio:
    wave: np.ndarray  # (N,) float32, mono, at sample_rate
    sample_rate: int
    decoder: str  # "libsndfile" | "ffmpeg"

    @property
    def duration_s(self) -> float:
        return len(self.wave) / self.sample_rate


@dataclass(frozen=True)
class DurationLimits:
    min_s: float
    max_s: float


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str | None:
    """The ffmpeg binary of the imageio-ffmpeg wheel (or IMAGEIO_FFMPEG_EXE), if any."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        log.warning("no ffmpeg decoder available: %s", exc)
        return None


def decode_upload(
    data: bytes, sample_rate: int, limits: DurationLimits, *, name: str, timeout_s: float
) -> DecodedAudio:
    """Uploaded bytes -> mono float32 at `sample_rate`.

    Raises UnsupportedAudio (415) when no decoder reads them, with each decoder's reason,
    and InvalidAudio (422) when they decode to nothing, to less than `limits.min_s`, to
    more than `limits.max_s`, or to samples that are not finite. A file libsndfile
    recognises but cannot finish (a truncated FLAC) is not handed to ffmpeg, which would
    quietly return the readable prefix."""
    if not data:
        raise InvalidAudio(f"{name}: the uploaded file is empty", {"duration_s": 0.0})
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = without_object_reprs(str(exc), "the upload")
        decoded = _decode_ffmpeg(data, sample_rate, limits, name, reason, timeout_s)
    else:
        if 0 < info.frames < UNKNOWN_FRAMES and info.samplerate > 0:
            _check_duration(info.frames / info.samplerate, limits, name)
        declared = wav_declared_frames(data)
        if declared is not None and declared > info.frames:  # libsndfile reads what is there
            raise _truncated(name, declared, info.frames, info.samplerate)
        try:
            wave = decode(data, sample_rate, name=name, max_seconds=limits.max_s)
        except AudioDecodeError as exc:
            held = _readable_frames(data)
            if 0 < info.frames < UNKNOWN_FRAMES and held < info.frames:
                raise _truncated(name, info.frames, held, info.samplerate) from exc
            raise UnsupportedAudio(str(exc), {"decoder": "libsndfile"}) from exc
        decoded = DecodedAudio(wave, sample_rate, "libsndfile")
    _check_duration(decoded.duration_s, limits, name)
    if not np.isfinite(decoded.wave).all():
        raise InvalidAudio(f"{name}: the audio holds NaN or infinite samples")
    return decoded


def _truncated(name: str, declared: int, held: int, sample_rate: int) -> UnsupportedAudio:
    """The one answer to a container that declares more frames than it holds (WAV, FLAC
    and MP3 alike): a truncated upload is never stored or searched as its prefix."""
    return UnsupportedAudio(
        f"{name}: truncated audio: the header declares {declared:,} frames "
        f"({declared / sample_rate:.2f} s), the file holds {held:,} ({held / sample_rate:.2f} s)",
        {"reason": "truncated", "declared_frames": declared, "held_frames": held,
         "decoder": "libsndfile"},  # fmt: skip
    )


def wav_declared_frames(data: bytes) -> int | None:
    """The frame count a RIFF/WAVE header declares (its data chunk's size over the block
    size), None for other containers and for the sizes streaming writers leave (0 or
    0xFFFFFFFF). libsndfile silently shortens a WAV whose data chunk runs past the end
    of the file to what the file holds, so the header is read here."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, block_align = 12, 0
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk == b"fmt " and offset + 22 <= len(data):
            block_align = struct.unpack_from("<H", data, offset + 20)[0]
        elif chunk == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        offset += 8 + size + (size & 1)  # chunks are padded to an even size
    return None


READ_FRAMES = 4096  # small reads: a block that ends in an error counts for nothing


def _readable_frames(data: bytes) -> int:
    """Frames libsndfile reads before the end of the file or its first error."""
    held = 0
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            # read() returns what was decoded; blocks() pads to the frame count claimed
            while len(block := f.read(READ_FRAMES, dtype="float32", always_2d=True)):
                held += len(block)
    except (sf.LibsndfileError, RuntimeError):
        pass
    return held


def _check_duration(duration: float, limits: DurationLimits, name: str) -> None:
    details = {"duration_s": round(duration, 3), "min_s": limits.min_s, "max_s": limits.max_s}
    if duration <= 0:
        raise InvalidAudio(f"{name}: the audio holds no samples", details)
    if duration < limits.min_s:
        raise InvalidAudio(
            f"{name}: {duration:.3f} s of audio is shorter than the minimum {limits.min_s:g} s",
            details,
        )
    if duration > limits.max_s:
        raise InvalidAudio(
            f"{name}: the audio is longer than the limit of {limits.max_s:g} s", details
        )


def _decode_ffmpeg(
    data: bytes,
    sample_rate: int,
    limits: DurationLimits,
    name: str,
    libsndfile_reason: str,
    timeout_s: float,
) -> DecodedAudio:
    exe = ffmpeg_exe()
    reasons = {"libsndfile": libsndfile_reason}
    if exe is None:
        reasons["ffmpeg"] = "not installed (pip install imageio-ffmpeg)"
        raise UnsupportedAudio(_reason_text(name, reasons), {"decoders": reasons})
    # A file, not a pipe: mp4/m4a keep their index ('moov') at the end, which a pipe
    # cannot seek to. Output stops just past the limit, so a long file cannot flood memory.
    with tempfile.NamedTemporaryFile(suffix=".upload") as tmp:
        tmp.write(data)
        tmp.flush()
        cmd = [
            exe, "-nostdin", "-hide_banner", "-loglevel", "error",
            "-protocol_whitelist", "file", "-format_whitelist", FFMPEG_FORMATS,
            "-i", tmp.name, "-t", f"{limits.max_s + 1:.3f}",
            "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1",
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            reasons["ffmpeg"] = f"decoding took longer than {timeout_s:g} s"
            raise UnsupportedAudio(_reason_text(name, reasons), {"decoders": reasons}) from None
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reasons["ffmpeg"] = lines[-1].replace(tmp.name, name) if lines else "decoding failed"
        raise UnsupportedAudio(_reason_text(name, reasons), {"decoders": reasons})
    usable = len(proc.stdout) - len(proc.stdout) % 4
    wave = np.frombuffer(proc.stdout[:usable], dtype="<f4").astype(np.float32)
    return DecodedAudio(wave, sample_rate, "ffmpeg")


def _reason_text(name: str, reasons: dict[str, str]) -> str:
    return f"{name}: no decoder can read this audio: " + "; ".join(
        f"{decoder}: {reason}" for decoder, reason in reasons.items()
    )


def save_flac(path: Path, wave: np.ndarray, sample_rate: int) -> Path:
    """Write a decoded upload as 16-bit FLAC, durably (temp file, fsync, rename, fsync of
    the folder), so the audio of an acknowledged clip survives a crash."""
    atomic_write(path, lambda f: sf.write(f, wave, sample_rate, format="FLAC", subtype="PCM_16"))
    return path
