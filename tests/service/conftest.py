"""Service test setup beyond tests/conftest.py (the model, the index, apps and servers):
a second checkpoint, a private copy of the index, a ready app over the shared index,
audio in every format the service reads, and one real server for the session."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

LIVE_UPLOAD_LIMIT = 1 << 20


@pytest.fixture(scope="session")
def other_checkpoint_dir(make_checkpoint: Callable[..., Path]) -> Path:
    """Same architecture, other heads: an index built with `checkpoint_dir` must refuse it."""
    return make_checkpoint(1)


@pytest.fixture
def index_copy(index_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the index, for tests that change it."""
    return Path(shutil.copytree(index_dir, tmp_path / "idx"))


@pytest.fixture(scope="module")
def client(index_dir: Path, make_client, make_settings) -> Iterator[TestClient]:
    """A ready service over the shared (read-only) index."""
    with make_client(make_settings(index_dir)) as c:
        yield c


def encode_ffmpeg(wav: bytes, suffix: str, codec: str, tmp: Path) -> bytes:
    """Re-encode WAV bytes with the imageio-ffmpeg binary (webm/opus as browsers record,
    m4a/aac as phones do)."""
    from atri.service.upload import ffmpeg_exe

    exe = ffmpeg_exe()
    if exe is None:
        pytest.skip("imageio-ffmpeg is not installed")
    src = tmp / "src.wav"
    out = tmp / f"out{suffix}"
    src.write_bytes(wav)
    subprocess.run(
        [exe, "-nostdin", "-y", "-loglevel", "error", "-i", str(src), "-c:a", codec, str(out)],
        check=True,
    )
    return out.read_bytes()


@pytest.fixture(scope="session")
def audio_samples(
    make_audio: Callable[..., bytes], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    """1.5 s of a tone in every format the service must read."""
    tmp = tmp_path_factory.mktemp("audio")
    wav = make_audio(1.5, 48000, "WAV", "PCM_16")
    return {
        "wav": wav,
        "flac": make_audio(1.5, 48000, "FLAC"),
        "ogg": make_audio(1.5, 48000, "OGG", "VORBIS"),
        "webm": encode_ffmpeg(wav, ".webm", "libopus", tmp),
        "m4a": encode_ffmpeg(wav, ".m4a", "aac", tmp),
    }


@pytest.fixture(scope="session")
def live_server(index_dir: Path, start_server, tmp_path_factory: pytest.TempPathFactory):
    """One real server for the session, with a 1 MiB upload limit."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {"ATRI_MAX_UPLOAD_BYTES": str(LIVE_UPLOAD_LIMIT)}
    with start_server(index_dir, env=env, log=log) as server:
        yield server
