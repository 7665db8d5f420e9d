"""Compact kinds with exact reranking: an approximate index over SQ8 codes (an IVF by
size; an HNSW graph by --factory) hands its best
candidates to `rescore`, which ranks them from the version's float16 vectors, so the
store returns the exact scores a flat scan would, recall is tuned with the reranking in
place, and versions written before the `rerank` field open and search as they did."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atri.index import faiss_util, layout
from atri.index.store import IndexStore

N, DIM = 3000, 32


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).standard_normal((30, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 30, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    scores = vectors @ query
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [(int(i), float(scores[i])) for i in order]


def test_rescore_ranks_candidates_exactly_from_float16_rows() -> None:
    vectors = clustered(500, seed=0).astype(np.float16)
    queries = clustered(4, seed=1)
    rng = np.random.default_rng(2)
    candidates = [
        [(int(i), 0.0) for i in rng.choice(500, 40, replace=False)] for _ in range(len(queries))
    ]
    for hits, query, found in zip(
        candidates, queries, faiss_util.rescore(candidates, vectors, queries, 10), strict=True
    ):
        rows = np.array(sorted(i for i, _ in hits))
        expected = exact_top(vectors[rows].astype(np.float32), query, 10)
        assert found == [(int(rows[j]), s) for j, s in expected]


def test_choose_factory_gives_compact_kinds_above_flat_max() -> None:
    assert faiss_util.choose_factory(faiss_util.FLAT_MAX) == "Flat"
    assert faiss_util.choose_factory(faiss_util.FLAT_MAX + 1) == "IVF512,SQ8"
    assert faiss_util.choose_factory(1_000_000) == "IVF4096,SQ8"


@pytest.fixture(scope="module", params=["IVF32,SQ8", "HNSW32,SQ8"])
def compact_index(request, tmp_path_factory, kit):
    root = tmp_path_factory.mktemp("compact") / "idx"
    records, vectors = kit.make_index(
        root, n=N, dim=DIM, factory=request.param, vectors=clustered(N, seed=0)
    )
    return root, records, vectors


def test_a_compact_index_is_tuned_with_its_reranking(compact_index) -> None:
    root, _, _ = compact_index
    store = IndexStore.open(root)
    try:
        meta = store.meta
        assert meta["factory"].endswith(",SQ8") and meta["rerank"] == faiss_util.RERANK
        if "efSearch" in meta["search_params"]:  # the graph searches at least that deep
            assert meta["search_params"]["efSearch"] >= faiss_util.RERANK
        assert meta["recall_at_10"] >= faiss_util.TARGET_RECALL
        assert store._snap.base.rerank == faiss_util.RERANK
    finally:
        store.close()


def test_a_compact_index_returns_exact_scores_at_the_target_recall(compact_index) -> None:
    root, records, vectors = compact_index
    queries = clustered(300, seed=99)  # not the tuning queries
    store = IndexStore.open(root)
    try:
        found = store.search(queries, 10)
    finally:
        store.close()
    position = {r.id: i for i, r in enumerate(records)}
    hits = 0
    for query, row in zip(queries, found, strict=True):
        truth = exact_top(vectors, query, 10)
        hits += len({position[c] for c, _ in row} & {i for i, _ in truth})
        for clip, score in row:  # every score is the exact one, not the SQ8 estimate
            assert score == pytest.approx(float(vectors[position[clip]] @ query), abs=1e-5)
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)
    assert hits / (10 * len(queries)) >= 0.93  # held-out queries: a little slack


def test_paging_a_compact_index_deeper_than_its_rerank_depth(compact_index) -> None:
    root, _, _ = compact_index
    query = clustered(1, seed=5)
    store = IndexStore.open(root)
    try:
        first, second = store.search(query, 60)[0], store.search(query, 60, offset=60)[0]
    finally:
        store.close()
    assert len(first) == len(second) == 60
    assert not {c for c, _ in first} & {c for c, _ in second}


def test_a_version_without_the_rerank_field_searches_as_before(tmp_path, kit) -> None:
    """Versions written before compact kinds (HNSW32 over float32, no "rerank" in
    meta.json) open unchanged and return FAISS's own hits."""
    root = tmp_path / "old"
    kit.make_index(root, n=400, dim=DIM, factory="HNSW32", vectors=clustered(400, seed=0))
    meta_path = layout.version_dir(root, layout.require_current(root)) / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["rerank"]
    for entry in meta["captions"].values():
        entry.pop("rerank", None)
    meta_path.write_text(json.dumps(meta))
    query = clustered(1, seed=3)
    store = IndexStore.open(root)
    try:
        assert store._snap.base.rerank == 0
        hits = store.search(query, 10)[0]
        expected = faiss_util.search(store._snap.base.index, query, 10)[0]
    finally:
        store.close()
    assert [s for _, s in hits] == [s for _, s in expected]
