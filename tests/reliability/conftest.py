"""Reliability test setup beyond tests/conftest.py (the model, the index, apps and
servers): one real server over a private copy of the index for this folder, and the
upload tests' view of it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest


@pytest.fixture(scope="session")
def reliability_server(
    index_dir: Path, start_server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator:
    """One real server for this folder's session, over a private copy of the index (the
    fuzzer's admin calls may add clips), with the default limits of api.md."""
    root = tmp_path_factory.mktemp("reliability")
    index = Path(shutil.copytree(index_dir, root / "idx"))
    with start_server(index, log=root / "server.log") as server:
        yield server


class Uploads:
    """The reliability server's two upload endpoints (POST /search/audio, the admin POST
    /clips), and its answers to one text and one audio search."""

    def __init__(self, url: str, admin_headers: dict[str, str], probe: bytes) -> None:
        self.url, self.admin_headers, self.probe = url, admin_headers, probe

    def search_audio(
        self, data: bytes, name: str = "upload.wav", ctype: str | None = None
    ) -> httpx.Response:
        part = (name, data) if ctype is None else (name, data, ctype)
        return httpx.post(
            f"{self.url}/search/audio", files={"file": part}, data={"k": "3"}, timeout=120
        )

    def add_clip(self, data: bytes, name: str = "clip.wav", **fields: str) -> httpx.Response:
        form = {"captions": json.dumps({"eng": ["an uploaded tone"]}), **fields}
        return httpx.post(
            f"{self.url}/clips", files={"file": (name, data)}, data=form,
            headers=self.admin_headers, timeout=120,
        )  # fmt: skip

    def answers(self) -> dict:
        """Hits and scores of a text search and of an audio search (the probe clip), and
        the index size."""
        url = self.url
        text = httpx.get(
            f"{url}/search", params={"q": "a piano", "lang": "eng", "k": 5}, timeout=60
        )
        sound = httpx.post(
            f"{url}/search/audio", files={"file": ("clip.flac", self.probe)}, data={"k": "5"},
            timeout=60,
        )  # fmt: skip
        assert text.status_code == 200 and sound.status_code == 200, (text.text, sound.text)
        health = httpx.get(f"{url}/health", timeout=10).json()
        return {
            "text": [(h["id"], h["score"]) for h in text.json()["results"]],
            "audio": [(h["id"], h["score"]) for h in sound.json()["similar_clips"]],
            "captions": [(c["text"], c["score"]) for c in sound.json()["captions"]],
            "index_size": health["index_size"],
        }


@pytest.fixture(scope="session")
def uploads(reliability_server, admin_headers, records, clip_ids) -> Uploads:
    probe = Path(records[clip_ids[0]].audio).read_bytes()
    return Uploads(reliability_server.url, admin_headers, probe)


@pytest.fixture(scope="module")
def assert_unchanged(uploads: Uploads) -> Callable[[], None]:
    """Asserts that the server answers as it did when the module's first test asked for
    this fixture (before that module's hostile requests)."""
    reference = uploads.answers()

    def check() -> None:
        assert uploads.answers() == reference

    return check
