"""IndexStore reads: search, paging, captions, exact ranks, records, threads."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from atri.index.errors import ClipExists, IndexMismatch, IndexNotFound, UnknownClip
from atri.index.store import IndexStore
from atri.training.data.manifest import ClipRecord


@pytest.fixture
def synthetic(tmp_path, kit):
    records, vectors = kit.make_index(tmp_path / "idx")
    return tmp_path / "idx", records, vectors


def brute_force_ranks(scores: np.ndarray) -> np.ndarray:
    """r = 1 + #clips scoring strictly higher, by a plain loop."""
    q, n = scores.shape
    ranks = np.zeros((q, n), dtype=np.int64)
    for i in range(q):
        for j in range(n):
            ranks[i, j] = 1 + sum(1 for other in range(n) if scores[i, other] > scores[i, j])
    return ranks


def test_each_clip_finds_itself_first(synthetic):
    root, records, vectors = synthetic
    store = IndexStore.open(root)
    hits = store.search(vectors, k=3)
    assert [h[0][0] for h in hits] == [r.id for r in records]
    assert all(abs(h[0][1] - 1.0) < 1e-3 for h in hits)
    assert faiss.cvar.distance_compute_blas_threshold == 1  # batched flat search uses BLAS


def test_k_beyond_size_has_no_padding(synthetic):
    root, records, vectors = synthetic
    hits = IndexStore.open(root).search(vectors[:2], k=500)
    assert [len(h) for h in hits] == [len(records)] * 2
    assert all(clip_id.startswith("c") for h in hits for clip_id, _ in h)


def test_offset_pages_through_one_ranking(synthetic):
    root, _, vectors = synthetic
    store = IndexStore.open(root)
    full = store.search(vectors[:3], k=12)
    pages = [store.search(vectors[:3], k=4, offset=o) for o in (0, 4, 8)]
    for q in range(3):
        assert [h for page in pages for h in page[q]] == full[q]
    assert store.search(vectors[:1], k=5, offset=len(store)) == [[]]
    with pytest.raises(ValueError):
        store.search(vectors[:1], k=0)


def test_captions_are_distinct_and_name_all_their_clips(synthetic, kit):
    root, records, _ = synthetic
    store = IndexStore.open(root)
    assert store.languages == ["eng", "fra"]
    assert store.captions_indexed == 2 * (3 + len(records))
    query = kit.caption_vector("fra shared caption 1")[None]
    hits = store.search_captions(query, "fra", k=store.captions_indexed)[0]
    texts = [text for text, _, _ in hits]
    assert len(texts) == len(set(texts)) == 3 + len(records)
    assert all(text.startswith("fra ") for text in texts)
    text, score, clip_ids = hits[0]
    assert text == "fra shared caption 1" and score == pytest.approx(1.0, abs=1e-3)
    assert clip_ids == [r.id for i, r in enumerate(records) if i % 3 == 1]
    assert store.search_captions(query, "jpn", k=5) == [[]]


def test_exact_ranks_match_brute_force_with_ties(tmp_path, kit):
    rng = np.random.default_rng(3)
    vectors = kit.unit(rng, 40)
    vectors[10] = vectors[3]  # ties: equal vectors score equally under any query
    vectors[25] = vectors[3]
    vectors[31] = vectors[7]
    records, stored = kit.make_index(tmp_path / "idx", n=40, vectors=vectors)
    store = IndexStore.open(tmp_path / "idx")
    queries = np.concatenate([stored[[3, 7]], kit.unit(rng, 3)])
    exact = store.ranks_and_topk(queries, k=5)
    assert exact.ids == [r.id for r in records]
    naive = np.array([[float(np.dot(q, v)) for v in stored] for q in queries])
    np.testing.assert_allclose(exact.scores, naive, atol=1e-5)
    np.testing.assert_array_equal(exact.ranks, brute_force_ranks(exact.scores))
    assert exact.rank(0, "c0003") == exact.rank(0, "c0010") == exact.rank(0, "c0025") == 1
    assert exact.rank(0, "c0007") == exact.rank(0, "c0031")
    assert [i for i, _ in exact.topk[0][:3]] == ["c0003", "c0010", "c0025"]
    for q, top in enumerate(exact.topk):
        assert [exact.rank(q, clip_id) for clip_id, _ in top] == sorted(
            exact.rank(q, clip_id) for clip_id, _ in top
        )
        assert exact.rank(q, top[0][0]) == 1


def test_exact_ranks_cover_live_changes(synthetic, kit):
    root, records, vectors = synthetic
    store = IndexStore.open(root)
    rng = np.random.default_rng(5)
    extra = kit.unit(rng, 2).astype(np.float16).astype(np.float32)
    for i, vec in enumerate(extra):
        store.add_clip(ClipRecord(f"new{i}", "/x.wav", {}, {}), vec, {})
    store.delete_clip("c0004")
    queries = kit.unit(rng, 4)
    ids, scores = store.exact_scores(queries)
    expected_ids = [r.id for r in records if r.id != "c0004"] + ["new0", "new1"]
    assert ids == expected_ids == store.ids()
    live = np.concatenate([np.delete(vectors, 4, axis=0), extra])
    np.testing.assert_allclose(scores, queries @ live.T, atol=1e-5)
    exact = store.ranks_and_topk(queries, k=3)
    np.testing.assert_array_equal(exact.ranks, brute_force_ranks(exact.scores))
    approx = store.search(queries, k=3)
    assert [[i for i, _ in top] for top in exact.topk] == [[i for i, _ in h] for h in approx]


def test_records_and_vectors(synthetic):
    root, records, vectors = synthetic
    store = IndexStore.open(root)
    assert len(store) == len(records)
    assert store.record("c0002") == records[2]
    np.testing.assert_array_equal(store.vector("c0002"), vectors[2])
    assert store.record("nope") is None and store.vector("nope") is None
    assert "c0002" in store and "nope" not in store
    assert store.identity["audio_backbone"] == "stub"
    assert store.meta["metric"] == "ip" and store.meta["factory"] == "Flat"


def test_mmap_open_gives_the_same_results(synthetic):
    root, _, vectors = synthetic
    assert IndexStore.open(root, mmap=True).search(vectors[:5], 4) == IndexStore.open(root).search(
        vectors[:5], 4
    )


def test_hnsw_store_finds_each_clip(tmp_path, kit):
    records, vectors = kit.make_index(tmp_path / "idx", n=300, factory="HNSW32")
    store = IndexStore.open(tmp_path / "idx")
    assert store.meta["factory"] == "HNSW32" and "efSearch" in store.meta["search_params"]
    assert store.meta["recall_at_10"] >= 0.95
    assert [h[0][0] for h in store.search(vectors, 1)] == [r.id for r in records]


def test_bad_inputs_raise_typed_errors(synthetic, tmp_path, kit):
    root, records, vectors = synthetic
    store = IndexStore.open(root)
    with pytest.raises(IndexMismatch):
        store.search(np.zeros((1, kit.DIM + 1), np.float32), 3)
    with pytest.raises(ClipExists):
        store.add_clip(records[0], vectors[0], records_vecs(records[0], kit))
    with pytest.raises(UnknownClip):
        store.delete_clip("nope")
    with pytest.raises(IndexMismatch):
        store.add_clip(ClipRecord("x1", "/x.wav", {}, {}), np.ones(kit.DIM + 1), {})
    with pytest.raises(ValueError, match="must match"):
        store.add_clip(ClipRecord("-bad id", "/x.wav", {}, {}), vectors[0], {})
    with pytest.raises(ValueError, match="caption vectors"):
        store.add_clip(ClipRecord("x2", "/x.wav", {"eng": ["a"]}, {}), vectors[0], {})
    with pytest.raises(IndexNotFound):
        IndexStore.open(tmp_path / "empty")
    assert len(store) == len(records)


def records_vecs(record: ClipRecord, kit) -> dict[str, np.ndarray]:
    return {
        lang: np.stack([kit.caption_vector(t) for t in texts])
        for lang, texts in record.captions.items()
    }


def test_searches_run_while_a_writer_adds(synthetic, kit):
    root, records, vectors = synthetic
    store = IndexStore.open(root)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                hits = store.search(vectors[:4], k=5)
                assert all(len(h) == 5 for h in hits)
                store.search_captions(vectors[:2], "eng", 3)
                exact = store.ranks_and_topk(vectors[:2], 3)
                assert exact.scores.shape[1] == len(exact.ids)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    rng = np.random.default_rng(9)
    for i, vec in enumerate(kit.unit(rng, 25)):
        record = ClipRecord(f"t{i}", "/x.wav", {"eng": [f"eng shared caption {i % 3}"]}, {})
        store.add_clip(record, vec, records_vecs(record, kit))
        if i % 5 == 0:
            store.delete_clip(f"c{i:04d}")
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(store) == len(records) + 25 - 5
    assert len(IndexStore.open(root)) == len(store)
