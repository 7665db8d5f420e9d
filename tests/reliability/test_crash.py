"""Crash safety: kill -9 at random moments of `atri index build` (a child process) and of a
real `atri serve` receiving admin POST /clips and DELETE /clips. After every kill the
index validates (`atri.index.validate.validate`), it serves the previous state or the
acknowledged one, and nothing acknowledged is lost (acknowledgements are tracked on the
client side). Seeded and bounded; 20+ trials each, so in the `slow` tier:

    .venv/bin/pytest tests/reliability/test_crash.py -m slow
"""

from __future__ import annotations

import io
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
import soundfile as sf
from harness import wait_until

from atri.index.store import IndexStore
from atri.index.validate import validate
from atri.training.data.manifest import read_manifest, write_manifest

TRIALS = int(os.environ.get("ATRI_CRASH_TRIALS", "20"))  # at least 20 for the record
BUILD_CODE = "import sys; from atri.cli import main; sys.exit(main(sys.argv[1:]))"


def served_ids(root: Path) -> list[str]:
    store = IndexStore.open(root)
    try:
        return sorted(store.ids())
    finally:
        store.close()


# --- kill -9 during `atri index build` ----------------------------------------------------


@pytest.fixture(scope="module")
def manifests(tiny_corpus: Path, tmp_path_factory) -> dict[str, Path]:
    """Two different sets of 8 clips: each build switches the served set, so the
    previous and the new state are told apart."""
    records = read_manifest(tiny_corpus / "test.jsonl").records
    out = tmp_path_factory.mktemp("manifests")
    paths = {}
    for name, chosen in (("a", records[:8]), ("b", records[8:16])):
        for record in chosen:
            record.audio = str((tiny_corpus / record.audio).resolve())
        paths[name] = out / f"{name}.jsonl"
        write_manifest(paths[name], chosen)
    return paths


def build_command(checkpoint: Path, manifest: Path, root: Path) -> list[str]:
    return [sys.executable, "-c", BUILD_CODE, "index", "build", "--checkpoint", str(checkpoint),
            "--manifest", str(manifest), "--out", str(root), "--batch-size", "2"]  # fmt: skip


def run_build_killed(
    cmd: list[str], kill_after: float, log: Path, writing: Path | None = None
) -> int:
    """Run a build, SIGKILL it after `kill_after` s unless it finished; its exit status.
    With `writing` (the index root), the clock starts only once the build has begun
    writing its new version (versions/.tmp-*): a kill inside that short window."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=sink, env=env, start_new_session=True)
        if writing is not None:
            wait_until(lambda: proc.poll() is not None
                       or any((writing / "versions").glob(".tmp-*")),
                       "the build to write its new version", 600, interval=0.002)  # fmt: skip
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode


def shards(root: Path) -> set[str]:
    return {p.name for p in (root / ".work").glob("*/*.npy")}


def phase(root: Path, status: int, published: bool, shards_before: set[str]) -> str:
    """How far the killed build got, from what it left on disk (shards left by earlier
    killed runs, which it reuses, do not count)."""
    if status == 0:
        return "finished"
    if published:
        return "published, not finished"
    if list((root / "versions").glob(".tmp-*")):
        return "writing the version"
    new = shards(root) - shards_before
    if any(name.startswith("text-") for name in new):
        return "embedding captions"
    if new:
        return "embedding audio"
    return "starting (imports, model, first batch)"


@pytest.mark.slow
def test_kill_9_during_index_build(manifests, checkpoint_dir, tmp_path) -> None:
    root = tmp_path / "idx"
    expected = {
        name: sorted(r.id for r in read_manifest(path).records) for name, path in manifests.items()
    }
    started = time.monotonic()
    status = run_build_killed(
        build_command(checkpoint_dir, manifests["a"], root), 600, tmp_path / "first.log"
    )
    full = time.monotonic() - started
    assert status == 0, (tmp_path / "first.log").read_text()
    assert served_ids(root) == expected["a"] and validate(root) == []

    rng = np.random.default_rng(0)
    phases: Counter = Counter()
    target = "b"
    # TRIALS kills at random times over a whole build, then a few at random times
    # inside the short window in which the new version is written and published
    for trial in range(TRIALS + TRIALS // 4):
        before, shards_before = served_ids(root), shards(root)
        in_write = trial >= TRIALS
        kill_after = float(rng.uniform(0, 0.3) if in_write else rng.uniform(0.5, 1.2 * full))
        log = tmp_path / f"build-{trial}.log"
        status = run_build_killed(
            build_command(checkpoint_dir, manifests[target], root),
            kill_after,
            log,
            writing=root if in_write else None,
        )
        assert status in (0, -signal.SIGKILL), log.read_text()
        problems = validate(root)
        assert problems == [], (trial, problems)
        now = served_ids(root)
        phases[phase(root, status, now != before, shards_before)] += 1
        if status == 0:  # acknowledged: the new set is served
            assert now == expected[target], trial
        else:  # killed: the previous set, or the new one if it was published
            assert now in (before, expected[target]), trial
        if now == expected[target]:
            target = "a" if target == "b" else "b"
    # a final uninterrupted build over whatever the kills left behind
    status = run_build_killed(
        build_command(checkpoint_dir, manifests[target], root), 600, tmp_path / "last.log"
    )
    assert status == 0 and served_ids(root) == expected[target] and validate(root) == []
    assert not list((root / ".work").glob("*/*.npy")), "shards left behind"
    print("build kills by phase:", dict(phases))
    assert len(phases) >= 4, phases  # the kills landed in several phases


# --- kill -9 during admin changes to a running service -------------------------------------


@dataclass
class Ledger:
    """What the clients know: acknowledged adds and deletes, and requests that got no
    answer (in flight at the kill: either outcome is allowed)."""

    added: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    captions: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # answers other than 201/204
    touched: set[str] = field(default_factory=set)  # since the last restart
    acks: int = 0  # 201s and 204s received
    lock: threading.Lock = field(default_factory=threading.Lock)


def wav(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * np.arange(16000) / 16000)
    sf.write(buf, wave.astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def client(
    url: str, headers: dict, ledger: Ledger, corpus: list[str], name: str, seed: int, stop
) -> None:
    """Adds clips and deletes clips (its own acknowledged ones, or corpus clips) until
    the server dies or `stop` is set."""
    rng = np.random.default_rng(seed)
    mine: list[str] = []
    n = 0
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        while not stop.is_set():
            if mine and rng.random() < 0.4:
                clip_id = mine.pop(int(rng.integers(len(mine))))
            elif rng.random() < 0.1 and corpus:
                clip_id = corpus.pop(int(rng.integers(len(corpus))))
            else:
                clip_id = None
            adding = clip_id is None
            if adding:
                clip_id, n = f"{name}-{n}", n + 1
            with ledger.lock:
                ledger.touched.add(clip_id)
            try:
                if adding:
                    caption = f"crash test clip {clip_id}"
                    with ledger.lock:
                        ledger.captions[clip_id] = caption
                    response = http.post(
                        "/clips",
                        files={"file": ("c.wav", wav(seed * 10_000 + n))},
                        data={"id": clip_id, "captions": json.dumps({"eng": [caption]})},
                    )
                    done, expected = ledger.added, 201
                    mine.append(clip_id)
                else:
                    response = http.delete(f"/clips/{clip_id}")
                    done, expected = ledger.deleted, 204
            except httpx.TransportError:  # killed with this request in flight
                with ledger.lock:
                    ledger.unknown.add(clip_id)
                return
            with ledger.lock:
                if response.status_code == expected:
                    done.add(clip_id)
                    ledger.acks += 1
                else:
                    ledger.errors.append(f"{clip_id}: {response.status_code} {response.text}")
                    return


def check_after_restart(url: str, ledger: Ledger, corpus_all: list[str]) -> dict[str, bool]:
    """Acknowledged adds are there (those of the last run complete: record, audio and
    vector); acknowledged deletes are gone; corpus clips nobody touched are there.
    Returns the presence of the in-flight ones."""
    present = {}
    for clip_id in sorted(ledger.added | ledger.deleted | ledger.unknown | set(corpus_all)):
        record = httpx.get(f"{url}/clips/{clip_id}", timeout=30)
        assert record.status_code in (200, 404), record.text
        present[clip_id] = record.status_code == 200
        if clip_id in ledger.unknown:
            pass  # in flight at the kill: either way
        elif clip_id in ledger.deleted:
            assert not present[clip_id], f"acknowledged delete of {clip_id} was undone"
        else:
            assert present[clip_id], f"acknowledged clip {clip_id} was lost"
        if present[clip_id] and clip_id in ledger.touched:
            if clip_id in ledger.captions:
                assert record.json()["captions"] == {"eng": [ledger.captions[clip_id]]}
            assert httpx.get(f"{url}/audio/{clip_id}", timeout=30).status_code == 200
            similar = httpx.get(f"{url}/search/similar", params={"id": clip_id, "k": 1}, timeout=30)
            assert similar.status_code == 200, similar.text
    return {i: present[i] for i in ledger.unknown}


@pytest.mark.slow
def test_kill_9_during_admin_changes(
    index_dir, clip_ids, start_server, admin_headers, tmp_path
) -> None:
    root = Path(shutil.copytree(index_dir, tmp_path / "idx"))
    rng = np.random.default_rng(1)
    ledger = Ledger()
    corpus = list(clip_ids)
    outcomes: Counter = Counter()
    for trial in range(TRIALS):
        log = tmp_path / f"server-{trial}.log"
        with start_server(root, log=log) as server:
            url, proc = server.url, server.proc
            if trial:  # the state the previous kill left, as the clients know it
                for clip_id, there in check_after_restart(url, ledger, clip_ids).items():
                    outcomes["in-flight present" if there else "in-flight absent"] += 1
                    (ledger.added if there else ledger.deleted).add(clip_id)
                    (ledger.deleted if there else ledger.added).discard(clip_id)
                ledger.unknown.clear()
                ledger.touched.clear()
            stop = threading.Event()
            workers = []
            for c in range(2):
                args = (url, admin_headers, ledger, corpus, f"t{trial}c{c}", 10 * trial + c, stop)
                workers.append(threading.Thread(target=client, args=args))
            for worker in workers:
                worker.start()
            # not a wait for a state: the kill's moment, at random in the clients' work, is
            # what this test varies
            time.sleep(float(rng.uniform(0.5, 4.0)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
        assert not ledger.errors, ledger.errors
        assert validate(root) == [], (trial, validate(root))
        outcomes["acknowledged"] = ledger.acks
    with start_server(root, log=tmp_path / "server-last.log") as server:
        check_after_restart(server.url, ledger, clip_ids)
    print("admin kills:", dict(outcomes))
    assert outcomes["acknowledged"] >= TRIALS  # the clients got work done between kills
