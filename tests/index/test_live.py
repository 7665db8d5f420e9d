"""Live changes: the fsync'd log, replay at open, torn lines, kill -9 of a writer,
compaction and the atomic switch of CURRENT."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from atri.index import layout, live
from atri.index.errors import IndexCorrupt, IndexMismatch
from atri.index.store import IndexStore
from atri.index.validate import validate
from atri.training.data.manifest import ClipRecord

LOG = layout.LIVE_LOG


@pytest.fixture
def root(tmp_path, kit):
    kit.make_index(tmp_path / "idx", n=30)
    return tmp_path / "idx"


def caption_vecs(record: ClipRecord, kit) -> dict[str, np.ndarray]:
    return {
        lang: np.stack([kit.caption_vector(t) for t in texts])
        for lang, texts in record.captions.items()
    }


def add(store: IndexStore, kit, clip_id: str, captions: dict | None = None, seed: int = 0):
    record = ClipRecord(clip_id, "/audio/new.wav", captions or {}, {"added": True})
    vec = kit.unit(np.random.default_rng(seed), 1)[0]
    store.add_clip(record, vec, caption_vecs(record, kit))
    return vec.astype(np.float16).astype(np.float32)


def snapshot(store: IndexStore, queries: np.ndarray) -> dict:
    return {
        "ids": sorted(store.ids()),
        "search": [[i for i, _ in h] for h in store.search(queries, 8)],
        "captions": {
            lang: [(t, sorted(c)) for t, _, c in store.search_captions(queries, lang, 50)[0]]
            for lang in ("eng", "fra")
        },
        "n_captions": store.captions_indexed,
    }


def test_changes_are_replayed_at_open(root, kit):
    store = IndexStore.open(root)
    vec = add(store, kit, "new1", {"eng": ["eng shared caption 2", "a brand new caption"]}, 1)
    store.delete_clip("c0005")  # carries "eng shared caption 2" with others
    store.delete_clip("c0004")  # the only clip of "eng own caption 4"
    add(store, kit, "c0004", {"fra": ["fra own caption 4"]}, seed=2)  # re-added, new vector
    queries = np.concatenate([vec[None], kit.unit(np.random.default_rng(7), 3)])
    before = snapshot(store, queries)
    reopened = IndexStore.open(root)
    assert snapshot(reopened, queries) == before
    assert reopened.record("new1").meta == {"added": True}
    assert reopened.record("c0004").captions == {"fra": ["fra own caption 4"]}
    assert reopened.search(vec[None], 1)[0][0][0] == "new1"
    shared = reopened.search_captions(kit.caption_vector("eng shared caption 2")[None], "eng", 1)
    text, _, clips = shared[0][0]
    assert text == "eng shared caption 2"
    assert "c0005" not in clips and clips[-1] == "new1"
    own4 = kit.caption_vector("eng own caption 4")[None]
    assert all(t != "eng own caption 4" for t, _, _ in reopened.search_captions(own4, "eng", 60)[0])
    # own captions of c0004 and c0005 orphaned (-4), "fra own caption 4" back, one new
    assert before["n_captions"] == 2 * (3 + 30) - 4 + 1 + 1
    assert validate(root) == []


def test_log_lines_carry_checksums(root, kit):
    store = IndexStore.open(root)
    add(store, kit, "new1")
    store.delete_clip("new1")
    lines = (root / LOG).read_bytes().splitlines()
    assert len(lines) == 3
    objs = [live.decode_line(line) for line in lines]
    assert [o["op"] for o in objs] == ["base", "add", "delete"]
    assert objs[0]["version"] == store.version
    damaged = lines[1].replace(b'"added":true', b'"added":false')
    with pytest.raises(ValueError, match="checksum"):
        live.decode_line(damaged)


def test_torn_last_line_is_ignored_and_cut_before_the_next_append(root, kit, caplog):
    store = IndexStore.open(root)
    add(store, kit, "kept")
    good = (root / LOG).read_bytes()
    half = live.encode_line({"op": "delete", "id": "c0001", "seq": 2})[:20]
    (root / LOG).write_bytes(good + half)  # a crash in the middle of a write
    with caplog.at_level(logging.WARNING):
        reopened = IndexStore.open(root)
    assert "torn" in caplog.text
    assert "kept" in reopened and "c0001" in reopened
    add(reopened, kit, "after", seed=3)
    assert not (root / LOG).read_bytes().startswith(good + half)
    again = IndexStore.open(root)
    assert "kept" in again and "after" in again and "c0001" in again
    assert validate(root) == []


def test_complete_last_line_with_bad_checksum_is_torn_too(root, kit, caplog):
    store = IndexStore.open(root)
    add(store, kit, "kept")
    add(store, kit, "lost", seed=1)
    data = (root / LOG).read_bytes()
    (root / LOG).write_bytes(data[:-10] + b"\0" * 9 + b"\n")  # garbage reached the disk
    with caplog.at_level(logging.WARNING):
        reopened = IndexStore.open(root)
    assert "kept" in reopened and "lost" not in reopened
    assert "torn" in caplog.text


def test_corrupt_middle_line_is_an_error(root, kit):
    store = IndexStore.open(root)
    add(store, kit, "a")
    add(store, kit, "b", seed=1)
    lines = (root / LOG).read_bytes().split(b"\n")
    lines[1] = lines[1][:-5] + b"xxxxx"
    (root / LOG).write_bytes(b"\n".join(lines))
    with pytest.raises(IndexCorrupt, match=":2:"):
        IndexStore.open(root)
    assert any("live-log" in p for p in validate(root))


def test_a_change_that_does_not_apply_is_corruption(root):
    entry = {"op": "delete", "id": "never-indexed", "seq": 1}
    with open(root / LOG, "ab") as f:
        f.write(live.encode_line(entry))
    with pytest.raises(IndexCorrupt, match="does not apply"):
        IndexStore.open(root)


def test_compaction_preserves_results(root, kit):
    store = IndexStore.open(root)
    vec = add(store, kit, "new1", {"eng": ["eng shared caption 0", "fresh"]}, seed=4)
    add(store, kit, "new2", {"eng": ["fresh"], "fra": ["fra fresh"]}, seed=5)
    store.delete_clip("c0003")
    store.delete_clip("c0007")
    queries = np.concatenate([vec[None], kit.unit(np.random.default_rng(8), 4)])
    before = snapshot(store, queries)
    ranks_before = store.ranks_and_topk(queries, 5)
    old = store.version
    assert store.compact() == old + 1
    assert snapshot(store, queries) == before
    reopened = IndexStore.open(root)
    assert reopened.version == old + 1
    assert snapshot(reopened, queries) == before
    ranks_after = reopened.ranks_and_topk(queries, 5)
    assert ranks_after.ids == ranks_before.ids
    np.testing.assert_array_equal(ranks_after.ranks, ranks_before.ranks)
    assert reopened.meta["parent_version"] == old
    assert (root / LOG).read_bytes().count(b"\n") == 1  # a bare header for the new version
    assert validate(root) == []
    assert reopened.compact() == old + 1  # nothing to fold


def test_crash_after_compaction_publish_discards_the_stale_log(root, kit, monkeypatch):
    store = IndexStore.open(root)
    add(store, kit, "new1", {"eng": ["only here"]})
    store.delete_clip("c0002")

    def crash(self, base):
        raise SystemExit("killed before the log was reset")

    monkeypatch.setattr(live.LiveLog, "reset", crash)
    with pytest.raises(SystemExit):
        store.compact()
    monkeypatch.undo()
    reopened = IndexStore.open(root)  # new version current, old log stale: not replayed twice
    assert reopened.version == 2 and "new1" in reopened and "c0002" not in reopened
    assert reopened.captions_indexed == 2 * 33 - 2 + 1  # c0002's own captions gone, one new
    add(reopened, kit, "new2", seed=1)  # replaces the stale log
    assert "new2" in IndexStore.open(root)
    assert validate(root) == []


def test_crash_before_switching_current_keeps_the_old_version(root, kit, monkeypatch):
    store = IndexStore.open(root)
    add(store, kit, "new1")
    publish = layout.publish

    def crashing_publish(root_, staged, on_step=None):
        def crash(step):
            if step == "version-renamed":
                raise SystemExit("power cut")

        return publish(root_, staged, on_step=crash)

    monkeypatch.setattr(layout, "publish", crashing_publish)
    with pytest.raises(SystemExit):
        store.compact()
    monkeypatch.undo()
    assert (root / "versions" / "2").is_dir()  # written, never made current
    reopened = IndexStore.open(root)
    assert reopened.version == 1 and "new1" in reopened and len(reopened) == 31
    assert validate(root) == []
    assert reopened.compact() == 2  # the unpublished folder is replaced, not served
    assert "new1" in IndexStore.open(root)


def test_another_process_rebuilding_is_detected(root, kit):
    store = IndexStore.open(root)
    other = IndexStore.open(root)
    add(other, kit, "x")
    other.compact()
    with pytest.raises(IndexMismatch, match="reopen"):
        add(store, kit, "y")


def test_two_stores_of_one_version_do_not_clobber_each_other(root, kit):
    first = IndexStore.open(root)
    second = IndexStore.open(root)
    add(first, kit, "from-first")
    with pytest.raises(IndexMismatch, match="another process"):
        add(second, kit, "from-second", seed=1)
    assert "from-first" in IndexStore.open(root)


WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from atri.index import live
    from atri.index.store import IndexStore
    from atri.training.data.manifest import ClipRecord

    root, start, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "pause"
    store = IndexStore.open(root)
    append = live.LiveLog.append

    def logged_then_wait(self, change):
        append(self, change)
        print("logged", change.get("record", {}).get("id"), flush=True)
        if pause:
            time.sleep(60)  # killed here: written and fsync'd, not yet acknowledged

    live.LiveLog.append = logged_then_wait
    rng = np.random.default_rng(start)
    for i in range(start, start + 1000):
        clip_id = f"k{i}"
        captions = {"eng": [f"kill caption {i}", "eng shared caption 0"]}
        vec = rng.standard_normal(store.dim)
        caps = {"eng": rng.standard_normal((2, store.dim))}
        store.add_clip(ClipRecord(clip_id, "/k.wav", captions, {}), vec, caps)
        print("acked", clip_id, flush=True)
    """
)


def run_and_kill(root, start: int, pause: bool, after_lines: int) -> list[str]:
    """Start a writer, SIGKILL it after it printed `after_lines` lines; its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(start), "pause" if pause else "run"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    try:
        while len(lines) < after_lines:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.split())
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    lines += [line.split() for line in rest.splitlines()]
    assert proc.returncode == -signal.SIGKILL, "the writer ended before it was killed"
    return [f"{a} {b}" for a, b in lines]


def check_all_or_nothing(root, out: list[str], start: int) -> set[str]:
    """The writer's changes are each fully present or absent, acknowledged ones present;
    returns the acknowledged ids."""
    store = IndexStore.open(root)
    assert validate(root) == []
    acked = {line.split()[1] for line in out if line.startswith("acked")}
    logged = {line.split()[1] for line in out if line.startswith("logged")}
    present = {i for i in store.ids() if i.startswith("k") and int(i[1:]) >= start}
    assert acked <= present, "an acknowledged change was lost"
    # At most one change in flight beyond what was printed (killed before its print).
    printed = [int(i[1:]) for i in logged | acked]
    last = max(printed, default=start - 1) + 1
    assert present <= {f"k{i}" for i in range(start, last + 1)}
    shared = store.search_captions(np.eye(store.dim)[:1], "eng", 500)[0]
    shared_clips = next(c for t, _, c in shared if t == "eng shared caption 0")
    for clip_id in present:  # fully present: record, vector and captions
        record = store.record(clip_id)
        assert record.captions["eng"][0] == f"kill caption {clip_id[1:]}"
        assert store.vector(clip_id) is not None
        assert clip_id in shared_clips
    return acked


def test_kill_9_between_log_write_and_ack_keeps_the_change(root):
    out = run_and_kill(root, start=0, pause=True, after_lines=1)
    assert out[0] == "logged k0" and not any(line.startswith("acked") for line in out)
    check_all_or_nothing(root, out, 0)
    assert "k0" in IndexStore.open(root)  # durable before the store returned


def test_kill_9_mid_stream_loses_no_acknowledged_change(root):
    out = run_and_kill(root, start=0, pause=False, after_lines=7)
    check_all_or_nothing(root, out, 0)


@pytest.mark.slow
def test_kill_9_crash_loop(root):
    rng = np.random.default_rng(0)
    acked: set[str] = set()
    for trial in range(20):
        start = 1000 * trial
        out = run_and_kill(root, start, pause=False, after_lines=int(rng.integers(1, 30)))
        acked |= check_all_or_nothing(root, out, start)
        assert acked <= set(IndexStore.open(root).ids())  # earlier trials' too
        if rng.random() < 0.3:
            IndexStore.open(root).compact()
            assert validate(root) == []
