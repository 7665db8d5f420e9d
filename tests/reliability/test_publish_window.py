"""kill -9 inside the publish window: `atri index compact` and `atri index build` (child
processes) are stopped at each step of publishing a version (ATRI_TEST_STOP_AT, index/
layout.py PUBLISH_STEPS: version written, version renamed, CURRENT switched, log
replaced), killed there with SIGKILL, and the index is checked: `validate` finds nothing,
and every acknowledged change is present.

Default tier: the compactor at every step (no model, ~2 s a trial). Slow tier: the
builder at every step under a real `atri serve` that receives uploads and deletes
throughout, then an uninterrupted rebuild: no acknowledged change lost, no answer but
201/204 and 503 (`index_busy` while the builder holds the lock, never a 500).

    .venv/bin/pytest tests/reliability/test_publish_window.py -m slow
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from harness import wait_until

from atri.index import layout
from atri.index.store import IndexStore
from atri.index.validate import validate
from atri.training.data.manifest import ClipRecord, read_manifest, write_manifest

CLI = "import sys; from atri.cli import main; sys.exit(main(sys.argv[1:]))"
DEADLINE_S = 600
SERVICE_WAIT_S = 300  # acknowledgements, a newly served version


@dataclass
class Child:
    """A child process that we reap ourselves (waitpid with WUNTRACED sees it stop)."""

    proc: subprocess.Popen
    status: int | None = None  # exit code, or -signal

    def wait_stopped(self, timeout: float = DEADLINE_S) -> bool:
        """True once the child stopped itself (SIGSTOP); False if it exited first."""

        def changed() -> tuple[int, int] | None:
            pid, status = os.waitpid(self.proc.pid, os.WNOHANG | os.WUNTRACED)
            return (pid, status) if pid else None

        _, status = wait_until(changed, f"child {self.proc.args} to stop or exit", timeout,
                               interval=0.01)  # fmt: skip
        if os.WIFSTOPPED(status):
            return True
        self.status = os.waitstatus_to_exitcode(status)
        return False

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        _, status = os.waitpid(self.proc.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)


def start(args: list[str], log: Path, stop_at: str | None) -> Child:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ATRI_TEST_STOP_AT", None)
    if stop_at:
        env["ATRI_TEST_STOP_AT"] = stop_at
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-c", CLI, *args], env=env,
                                stdout=sink, stderr=sink)  # fmt: skip
    return Child(proc)


def kill_at(args: list[str], log: Path, step: str) -> None:
    child = start(args, log, step)
    assert child.wait_stopped(), f"exited with {child.status}: {log.read_text()}"
    assert f"stopped at {step}" in log.read_text()
    child.kill()
    assert child.status == -signal.SIGKILL


def assert_present(root: Path, added: dict[str, str], deleted: set[str]) -> IndexStore:
    """validate finds nothing; acknowledged adds are there whole, deletes stay gone."""
    assert validate(root) == []
    store = IndexStore.open(root)
    for clip_id, caption in added.items():
        record = store.record(clip_id)
        assert record is not None, f"acknowledged clip {clip_id} lost"
        assert record.captions == {"eng": [caption]} and store.vector(clip_id) is not None
        hits = store.search_captions(store.vector(clip_id), "eng", len(store) + 50)[0]
        assert any(text == caption and clip_id in ids for text, _, ids in hits)
    assert not deleted & set(store.ids()), "an acknowledged delete was undone"
    return store


def acknowledge(store: IndexStore, records: dict, n: int, tag: str) -> dict[str, str]:
    """n clips added through the store (each returns once durable): id -> caption."""
    rng = np.random.default_rng(len(tag) + n)
    base = next(iter(records.values()))
    added = {}
    for i in range(n):
        clip_id, caption = f"{tag}-{i}", f"acknowledged clip {tag} {i}"
        vec = rng.standard_normal(store.dim)
        store.add_clip(ClipRecord(clip_id, base.audio, {"eng": [caption]}, {}), vec,
                       {"eng": rng.standard_normal((1, store.dim))})  # fmt: skip
        added[clip_id] = caption
    return added


@pytest.mark.parametrize("step", layout.PUBLISH_STEPS)
def test_kill_9_of_the_compactor_at_each_publish_step(
    step, index_dir, records, clip_ids, tmp_path
) -> None:
    root = Path(shutil.copytree(index_dir, tmp_path / "idx"))
    store = IndexStore.open(root)
    added = acknowledge(store, records, 3, "a")
    for clip_id in (clip_ids[0], "a-1"):
        store.delete_clip(clip_id)
    deleted = {clip_ids[0], "a-1"}
    del added["a-1"]
    kill_at(["index", "compact", str(root)], tmp_path / "compact.log", step)
    published = layout.PUBLISH_STEPS.index(step) >= layout.PUBLISH_STEPS.index("current-switched")
    store = assert_present(root, added, deleted)
    assert store.version == (2 if published else 1)
    # the index takes changes and compacts cleanly over whatever the kill left
    added |= acknowledge(store, records, 1, "b")
    store.compact()
    assert_present(root, added, deleted)
    assert not list((root / "versions").glob(".tmp-*"))
    assert layout.published_versions(root)[-1] == layout.current_version(root)


# --- the builder under a live service (slow) ---------------------------------------------


@dataclass
class Ledger:
    added: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)  # "201", "503 index_busy", ...
    failures: list[str] = field(default_factory=list)  # anything but 201/204/503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acks(self) -> int:
        with self.lock:
            return self.statuses["201"] + self.statuses["204"]


def uploader(url: str, headers: dict, wav: bytes, ledger: Ledger, name: str, stop) -> None:
    """Adds clips, deletes every third of its own, until `stop`; keeps one connection
    (a failed answer must not break it)."""
    n = 0
    mine: list[str] = []
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        while not stop.is_set():
            if len(mine) > 2 and n % 3 == 0:
                clip_id = mine.pop(0)
                response = http.delete(f"/clips/{clip_id}")
                done = response.status_code == 204
            else:
                clip_id, caption = f"{name}-{n}", f"uploaded during rebuilds {name} {n}"
                response = http.post(
                    "/clips", files={"file": ("u.wav", wav)},
                    data={"id": clip_id, "captions": json.dumps({"eng": [caption]})},
                )  # fmt: skip
                done = response.status_code == 201
            n += 1
            with ledger.lock:
                code = response.json()["error"]["code"] if response.status_code >= 400 else ""
                ledger.statuses[f"{response.status_code} {code}".strip()] += 1
                if done and response.status_code == 201:
                    ledger.added[clip_id] = caption
                    mine.append(clip_id)
                elif done:
                    ledger.deleted.add(clip_id)
                    ledger.added.pop(clip_id, None)
                elif response.status_code != 503:
                    ledger.failures.append(f"{clip_id}: {response.status_code} {response.text}")


def wait_for_acks(ledger: Ledger, more: int, what: str) -> None:
    target = ledger.acks() + more
    wait_until(lambda: ledger.acks() >= target, what, SERVICE_WAIT_S)


def wait_for_version(url: str, version: int | None) -> None:
    def served() -> bool:
        return httpx.get(f"{url}/health", timeout=30).json()["index_version"] == version

    wait_until(served, f"the service to serve version {version}", SERVICE_WAIT_S)


@pytest.mark.slow
def test_kill_9_of_a_rebuild_at_each_publish_step_under_a_live_service(
    index_dir, tiny_corpus, checkpoint_dir, start_server, admin_headers, make_audio, tmp_path
) -> None:
    root = Path(shutil.copytree(index_dir, tmp_path / "idx"))
    source = tmp_path / "source.jsonl"
    chosen = read_manifest(tiny_corpus / "test.jsonl").records[4:12]
    for record in chosen:
        record.audio = str((tiny_corpus / record.audio).resolve())
    write_manifest(source, chosen)
    build = ["index", "build", "--checkpoint", str(checkpoint_dir), "--manifest", str(source),
             "--out", str(root), "--batch-size", "4"]  # fmt: skip
    ledger = Ledger()
    env = {"ATRI_INDEX_POLL_S": "0.2"}
    times: dict[str, float] = {}
    with start_server(root, env=env, log=tmp_path / "server.log") as server:
        for trial, step in enumerate([*layout.PUBLISH_STEPS, None]):
            stop = threading.Event()
            clients = [
                threading.Thread(target=uploader, args=(server.url, admin_headers,
                                 make_audio(1.0 + 0.1 * c), ledger, f"t{trial}c{c}", stop))
                for c in range(2)
            ]  # fmt: skip
            for thread in clients:
                thread.start()
            wait_for_acks(ledger, 2, "uploads before the build")
            started = time.monotonic()
            log = tmp_path / f"build-{trial}.log"
            if step is None:  # the last rebuild runs to its end
                child = start(build, log, None)
                assert not child.wait_stopped() and child.status == 0, log.read_text()
            else:
                kill_at(build, log, step)
            times[step or "uninterrupted"] = time.monotonic() - started
            wait_for_acks(ledger, 2, "uploads after the kill")
            stop.set()
            for thread in clients:
                thread.join(timeout=300)
            assert not ledger.failures, ledger.failures
            wait_for_version(server.url, layout.current_version(root))
            assert_present(root, ledger.added, ledger.deleted)
            for clip_id in ledger.added:
                assert httpx.get(f"{server.url}/clips/{clip_id}").status_code == 200, clip_id
            for clip_id in ledger.deleted:
                assert httpx.get(f"{server.url}/clips/{clip_id}").status_code == 404, clip_id
            uploads = {p.stem for p in (root / "uploads").glob("*.flac")}
            assert uploads == set(ledger.added), "orphan or missing upload files"
    store = IndexStore.open(root)
    assert set(store.ids()) == {r.id for r in chosen} | set(ledger.added)
    print("rebuild kills: statuses", dict(ledger.statuses), "seconds", times)
