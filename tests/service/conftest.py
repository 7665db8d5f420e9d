"""Service test setup: a real model (aisfx + e5-small, heads seeded), a real index of part
of the tiny corpus's test split, apps that load them, and audio bytes in many formats."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

N_CLIPS = 12  # clips indexed: enough for ranks and paging, quick to embed
ADMIN_TOKEN = "test-admin-token"
READY_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the default architecture with seeded random heads."""
    import torch

    from atri.training.checkpoint import save_checkpoint
    from atri.training.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig())
    out = tmp_path_factory.mktemp("ckpt") / "seed0"
    save_checkpoint(model, out, training_config={}, step=0, epoch=0, metrics={})
    return out


@pytest.fixture(scope="session")
def other_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, other heads: an index built with `checkpoint_dir` must refuse it."""
    import torch

    from atri.training.checkpoint import save_checkpoint
    from atri.training.model import ModelConfig, build_model

    torch.manual_seed(1)
    model = build_model(ModelConfig())
    out = tmp_path_factory.mktemp("ckpt") / "seed1"
    save_checkpoint(model, out, training_config={}, step=0, epoch=0, metrics={})
    return out


@pytest.fixture(scope="session")
def index_dir(
    tiny_corpus: Path, checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An index of the first N_CLIPS clips of the tiny corpus's test split, with the meta
    `atri index build` writes (checkpoint, source)."""
    from atri.index.build import build_index
    from atri.training.checkpoint import load_checkpoint
    from atri.training.manifest import ClipRecord, read_manifest

    manifest = read_manifest(tiny_corpus / "test.jsonl")
    records = [
        ClipRecord(r.id, str(manifest.audio_path(r).resolve()), r.captions, r.meta)
        for r in manifest.records[:N_CLIPS]
    ]
    model, info = load_checkpoint(checkpoint_dir)
    root = tmp_path_factory.mktemp("index") / "idx"
    build_index(
        model,
        records,
        root,
        meta={
            "checkpoint": {
                "path": str(checkpoint_dir),
                "info": json.loads(json.dumps(info, default=str)),
            },
            "source": {"manifest": str((tiny_corpus / "test.jsonl").resolve())},
        },
    )
    return root


@pytest.fixture
def index_copy(index_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the index, for tests that change it."""
    return Path(shutil.copytree(index_dir, tmp_path / "idx"))


def settings_for(index: Path, **overrides):
    from atri.service.settings import Settings

    return Settings(**{"index_dir": index, "admin_token": ADMIN_TOKEN, **overrides})


@contextmanager
def ready_client(settings, **client_args) -> Iterator[TestClient]:
    """A TestClient of a fresh app, once /health says ok (bounded wait)."""
    from atri.service.app import create_app

    app = create_app(settings)
    with TestClient(app, **client_args) as client:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            response = client.get("/health")
            if response.status_code == 200:
                break
            body = response.json()
            assert body["status"] == "loading", body
            assert time.monotonic() < deadline, "service not ready in time"
            time.sleep(0.05)
        yield client


@pytest.fixture(scope="module")
def client(index_dir: Path) -> Iterator[TestClient]:
    """A ready service over the shared (read-only) index."""
    with ready_client(settings_for(index_dir)) as c:
        yield c


@pytest.fixture(scope="session")
def clip_ids(index_dir: Path) -> list[str]:
    from atri.index.store import IndexStore

    store = IndexStore.open(index_dir)
    try:
        return store.ids()
    finally:
        store.close()


@pytest.fixture(scope="session")
def records(index_dir: Path) -> dict:
    from atri.index.store import IndexStore

    store = IndexStore.open(index_dir)
    try:
        return {i: store.record(i) for i in store.ids()}
    finally:
        store.close()


# --- audio bytes -------------------------------------------------------------------------


def tone(seconds: float, sr: int = 16000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode_sf(wave: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def encode_ffmpeg(wave: np.ndarray, sr: int, suffix: str, codec: str, tmp: Path) -> bytes:
    """Encode with the imageio-ffmpeg binary (webm/opus as browsers record, m4a/aac as
    phones do)."""
    from atri.service.upload import ffmpeg_exe

    exe = ffmpeg_exe()
    if exe is None:
        pytest.skip("imageio-ffmpeg is not installed")
    src = tmp / "src.wav"
    out = tmp / f"out{suffix}"
    sf.write(src, wave, sr)
    subprocess.run(
        [exe, "-nostdin", "-y", "-loglevel", "error", "-i", str(src), "-c:a", codec, str(out)],
        check=True,
    )
    return out.read_bytes()


@pytest.fixture(scope="session")
def audio_samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """1.5 s of a tone in every format the service must read."""
    tmp = tmp_path_factory.mktemp("audio")
    wave = tone(1.5, 48000)
    return {
        "wav": encode_sf(wave, 48000, "WAV", "PCM_16"),
        "flac": encode_sf(wave, 48000, "FLAC"),
        "ogg": encode_sf(wave, 48000, "OGG", "VORBIS"),
        "webm": encode_ffmpeg(wave, 48000, ".webm", "libopus", tmp),
        "m4a": encode_ffmpeg(wave, 48000, ".m4a", "aac", tmp),
    }


# --- a real server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(
    index: Path, *extra: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`atri serve` in a child process on a free loopback port; yields (base URL, process)
    once /health answers 200, and terminates it afterwards. Its stderr (the JSON logs)
    goes to `log`, a file, so a chatty server never blocks on a full pipe."""
    port = free_port()
    code = "import sys; from atri.service.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "--index", str(index), "--port", str(port), *extra]
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", "ATRI_ADMIN_TOKEN": ADMIN_TOKEN}
    child_env.update(env or {})
    log = log or index.parent / f"server-{port}.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, env=child_env, stdout=sink, stderr=sink, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, log)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(
    base: str, proc: subprocess.Popen, log: Path, timeout: float = READY_TIMEOUT_S
) -> None:
    """Poll /health until 200, the process exits, or `timeout` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server at {base} not ready within {timeout} s")


LIVE_UPLOAD_LIMIT = 1 << 20


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    proc: subprocess.Popen
    upload_limit: int


@pytest.fixture(scope="session")
def live_server(index_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for the session, with a 1 MiB upload limit."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {"ATRI_MAX_UPLOAD_BYTES": str(LIVE_UPLOAD_LIMIT)}
    with running_server(index_dir, env=env, log=log) as (base, proc):
        yield Server(base, log, proc, LIVE_UPLOAD_LIMIT)


# --- the helpers above, as fixtures (test modules cannot import conftest) -------------


@pytest.fixture(scope="session")
def make_settings() -> Callable:
    return settings_for


@pytest.fixture(scope="session")
def make_client() -> Callable:
    return ready_client


@pytest.fixture(scope="session")
def start_server() -> Callable:
    return running_server


@pytest.fixture(scope="session")
def make_audio() -> Callable[..., bytes]:
    """(seconds, sample rate=16000, format="WAV") -> bytes of a tone."""

    def make(seconds: float, sr: int = 16000, fmt: str = "WAV") -> bytes:
        return encode_sf(tone(seconds, sr), sr, fmt)

    return make


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
