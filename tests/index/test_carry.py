"""Rebuilding a served index (index/carry.py): the clips added and deleted through the
live log of the version replaced are carried into the new version, by id, without
duplicates; `--drop-live-changes` drops them knowingly; a rebuild with another model
re-embeds the carried clips, or refuses, naming the clip, when it cannot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from atri.index import layout, live
from atri.index.build import build_index
from atri.index.errors import IndexBusy, IndexChanged, UnmergedChanges
from atri.index.store import IndexStore
from atri.index.validate import validate
from atri.training.data.audio_io import load_audio
from atri.training.data.manifest import ClipRecord


def sources(folder: Path, names: list[str]) -> list[ClipRecord]:
    """One short real WAV file per name (distinct tones), each a clip with a caption."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, name in enumerate(names):
        path = folder / f"{name}.wav"
        if not path.exists():
            t = np.arange(4000) / 8000
            sf.write(path, (0.2 * np.sin(2 * np.pi * (200 + 37 * i) * t)).astype(np.float32), 8000)
        records.append(ClipRecord(name, str(path), {"eng": [f"the sound of {name}"]}, {}))
    return records


def add(store: IndexStore, kit, clip_id: str, audio: Path, caption: str) -> np.ndarray:
    vec = kit.unit(np.random.default_rng(abs(hash(clip_id)) % 2**32), 1)[0]
    record = ClipRecord(clip_id, str(audio), {"eng": [caption]}, {"via": "service"})
    store.add_clip(record, vec, {"eng": kit.caption_vector(caption)[None]})
    return vec.astype(np.float16).astype(np.float32)


@pytest.fixture
def served(tmp_path, kit):
    """An index of a0..a5 with live changes: x1 and x2 added (x2 also in the next
    source), a1 deleted, a2 deleted then added back, x3 added then deleted."""
    root = tmp_path / "idx"
    audio = tmp_path / "audio"
    names = [f"a{i}" for i in range(6)]
    build_index(kit.StubModel(), sources(audio, names), root)
    store = IndexStore.open(root)
    uploads = sources(tmp_path / "uploads", ["x1", "x2", "x3", "a2b"])
    vecs = {
        "x1": add(store, kit, "x1", Path(uploads[0].audio), "an uploaded bell"),
        "x2": add(store, kit, "x2", Path(uploads[1].audio), "the sound of a0"),
    }
    store.delete_clip("a1")
    store.delete_clip("a2")
    vecs["a2"] = add(store, kit, "a2", Path(uploads[3].audio), "a2, uploaded again")
    add(store, kit, "x3", Path(uploads[2].audio), "gone again")
    store.delete_clip("x3")
    return root, audio, store, vecs


def test_a_rebuild_carries_the_live_changes(served, kit):
    root, audio, old_store, vecs = served
    source = sources(audio, ["a0", "a1", "a2", "a3", "x2", "b9"])  # a4, a5 left the source
    build_index(kit.StubModel(), source, root)
    store = IndexStore.open(root)
    assert store.version == 2 and validate(root) == []
    assert sorted(store.ids()) == ["a0", "a2", "a3", "b9", "x1", "x2"]
    # x2 (added) and a2 (deleted, added again) are in the new source: the source's serve
    assert store.record("x2").meta == {} and store.record("a2").meta == {}
    np.testing.assert_array_equal(store.vector("x1"), vecs["x1"])  # copied, not re-embedded
    hits = store.search_captions(kit.caption_vector("the sound of a0")[None], "eng", 1)[0]
    assert hits[0][0] == "the sound of a0" and sorted(hits[0][2]) == ["a0"]
    assert store.search(vecs["x1"][None], 1)[0][0][0] == "x1"
    meta = json.loads((root / "versions/2/meta.json").read_text())
    assert meta["carried"] == {
        "from_version": 1, "added": 1, "deleted": 1, "already_in_source": 2,
        "reembedded": False,
    }  # fmt: skip
    assert store.meta["model"] == kit.StubModel().identity()
    log = (root / "live.log").read_text().splitlines()
    assert len(log) == 1 and '"version":2' in log[0]  # the changes are in the version
    with pytest.raises(IndexChanged, match="reopen"):  # the old store must reopen first
        old_store.delete_clip("a0")
    reopened = old_store.reopen()
    reopened.delete_clip("a0")
    assert "a0" not in IndexStore.open(root)


def test_drop_live_changes_discards_them(served, kit, caplog):
    root, audio, _, _ = served
    build_index(kit.StubModel(), sources(audio, ["a0", "a1"]), root, drop_live_changes=True)
    assert sorted(IndexStore.open(root).ids()) == ["a0", "a1"]
    assert "dropping 7 live change(s) to version 1, as asked (--drop-live-changes)" in caplog.text


class OtherModel:
    """The stub model under another identity with its own vectors (a retrained model)."""

    def __init__(self, kit) -> None:
        self._inner = kit.StubModel()
        self.config, self.sample_rate = self._inner.config, self._inner.sample_rate

    def eval(self):
        return self

    def identity(self) -> dict[str, str]:
        return {**self._inner.identity(), "text_encoder_version": "2"}

    def embed_audio(self, waves):
        return -self._inner.embed_audio(waves)

    def embed_text(self, texts, lang):
        return -self._inner.embed_text(texts, lang)


def test_a_rebuild_with_another_model_reembeds_the_carried_clips(served, kit):
    root, audio, _, _ = served
    other = OtherModel(kit)
    build_index(other, sources(audio, ["a0"]), root)
    store = IndexStore.open(root)
    assert sorted(store.ids()) == ["a0", "a2", "x1", "x2"] and validate(root) == []
    wave = kit.StubModel().embed_audio
    expected = -wave([torch.from_numpy(load_audio(store.record("x1").audio, 8000))])[0].numpy()
    np.testing.assert_allclose(store.vector("x1"), expected, atol=1e-3)
    assert store.meta["carried"]["reembedded"] is True


def test_a_change_that_cannot_be_carried_refuses_the_rebuild(served, kit):
    root, audio, _, _ = served
    Path(IndexStore.open(root).record("x1").audio).unlink()  # its audio is gone
    with pytest.raises(UnmergedChanges, match=r"clip 'x1'.*--drop-live-changes"):
        build_index(OtherModel(kit), sources(audio, ["a0"]), root)
    store = IndexStore.open(root)  # nothing published: the old version and its changes
    assert store.version == 1 and "x1" in store and "a1" not in store
    assert validate(root) == [] and not list((root / "versions").glob(".tmp-*"))


def test_the_lock_is_waited_for_with_a_bound(served, kit):
    root, _, _, _ = served
    store = IndexStore.open(root, lock_timeout_s=0.2)
    with layout.locked(root), pytest.raises(IndexBusy, match="held the index lock"):
        store.delete_clip("a0")
    store.delete_clip("a0")  # free again


def test_a_store_opened_between_the_switch_and_the_log_reset_takes_changes(served, kit):
    """A service that reopens the index after a rebuild switched CURRENT but before it
    replaced the log sees a stale log; once the publisher has replaced it by a bare
    header for the new version, the service's next change is appended, not refused."""
    root, audio, _, _ = served

    def killed(step: str) -> None:
        if step == "current-switched":
            raise SystemExit("killed before the log was replaced")

    with pytest.raises(SystemExit):
        build_index(kit.StubModel(), sources(audio, ["a0"]), root, on_step=killed)
    between = IndexStore.open(root)  # CURRENT 2, the log still of version 1: stale
    assert between.version == 2 and "x1" in between
    live.reset_log(root / layout.LIVE_LOG, 2, kit.DIM)  # what the publisher does next
    add(between, kit, "late", Path(between.record("x1").audio), "added after the switch")
    assert "late" in IndexStore.open(root) and validate(root) == []


def test_uploads_and_deletes_survive_every_later_rebuild_and_compaction(served, kit):
    """A nightly rebuild from an unchanged source keeps the uploads of every earlier day
    (carried into a version, or compacted into it), and deleted source clips stay
    deleted; only --drop-live-changes returns to the source alone."""
    root, audio, _, vecs = served
    source = sources(audio, ["a0", "a1", "a2", "a3"])
    build_index(kit.StubModel(), source, root)  # version 2
    uploads = ["a0", "a2", "a3", "x1", "x2"]
    assert sorted(IndexStore.open(root).ids()) == uploads
    store = IndexStore.open(root)
    add(store, kit, "y1", Path(store.record("x1").audio), "uploaded on day two")
    store.delete_clip("a3")  # a source clip
    assert store.compact() == 3
    assert IndexStore.open(root).meta.get("parent_version") == 2
    for version in (4, 5):  # two more rebuilds from the same source
        assert build_index(kit.StubModel(), source, root) == version
        store = IndexStore.open(root)
        assert sorted(store.ids()) == ["a0", "a2", "x1", "x2", "y1"] and validate(root) == []
        np.testing.assert_array_equal(store.vector("x1"), vecs["x1"])
    overlay = json.loads((root / "versions/5/overlay.json").read_text())
    assert overlay == {"added": ["x1", "x2", "y1"], "deleted": ["a1", "a3"]}
    build_index(kit.StubModel(), source, root, drop_live_changes=True)
    assert sorted(IndexStore.open(root).ids()) == ["a0", "a1", "a2", "a3"]
    assert not (root / "versions/6/overlay.json").exists()
