"""Recall tuning that cannot reach its target: the efSearch grid is walked to its end, the
shortfall is recorded in meta.json, and opening the index warns about it."""

from __future__ import annotations

import logging

import numpy as np

from atri.index import faiss_util
from atri.index.store import IndexStore
from atri.index.version import recall_warnings, write_version
from atri.training.data.manifest import ClipRecord

# 16-bit codes over 3,000 vectors: recall@10 far below 0.95 at any nprobe, even with the
# best RERANK candidates rescored exactly (they are not among them)
LOSSY, LOSSY_N = "IVF16,PQ4x4", 3000


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)).astype(np.float32)
    x = centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write(tmp_path, factory: str, n: int = 1000, **kwargs) -> dict:
    out = tmp_path / factory.replace(",", "_")
    out.mkdir()
    return write_version(
        out,
        dim=32,
        ids=[f"x{i}" for i in range(n)],
        records=(ClipRecord(f"x{i}", "/x.wav", {}, {}) for i in range(n)),
        vectors=[clustered(n, 32)],
        captions={},
        factory=factory,
        meta={},
        **kwargs,
    )


def test_an_unreachable_target_walks_the_whole_ef_grid(tmp_path):
    assert faiss_util.EF_SEARCH_GRID[-1] == 4096
    meta = write(tmp_path, "HNSW32", n=300, recall_target=1.01)  # recall cannot pass 1
    assert meta["search_params"] == {"efSearch": 4096}
    assert meta["recall_target"] == 1.01
    assert meta["recall_shortfall"] == round(1.01 - meta["recall_at_10"], 4) > 0


def test_a_lossy_index_records_its_shortfall(tmp_path):
    meta = write(tmp_path, LOSSY, n=LOSSY_N)
    assert meta["recall_target"] == faiss_util.TARGET_RECALL
    assert meta["recall_at_10"] < 0.9
    assert meta["recall_shortfall"] == round(faiss_util.TARGET_RECALL - meta["recall_at_10"], 4)
    (warning,) = recall_warnings(meta)
    assert warning.startswith(f"clip index ({LOSSY}): recall@10 ")
    assert "below the target 0.95 at nprobe=16, the largest tried" in warning


def test_a_met_target_records_no_shortfall(tmp_path):
    for factory in ("Flat", "HNSW32"):
        meta = write(tmp_path, factory, n=500)
        assert meta["recall_at_10"] >= 0.95 and meta["recall_shortfall"] == 0
        assert recall_warnings(meta) == []


def test_versions_without_the_field_are_judged_by_their_recall():
    old = {
        "factory": "HNSW32",
        "search_params": {"efSearch": 1024},
        "recall_at_10": 0.8282,
        "captions": {"eng": {"factory": "Flat", "search_params": {}, "recall_at_10": 1.0}},
    }
    (warning,) = recall_warnings(old)
    assert warning == (
        "clip index (HNSW32): recall@10 0.828, 0.122 below the target 0.95 at "
        "efSearch=1024, the largest tried"
    )
    assert recall_warnings({"dim": 8, "model": {}}) == []  # e.g. a Milvus backend's meta


def test_opening_the_index_warns_of_a_shortfall(tmp_path, kit, caplog):
    root = tmp_path / "idx"
    kit.make_index(root, n=LOSSY_N, factory=LOSSY)
    with caplog.at_level(logging.WARNING, logger="atri.index.store"):
        store = IndexStore.open(root)
    warned = [r.getMessage() for r in caplog.records if r.name == "atri.index.store"]
    assert any("clip index" in m and "below the target" in m for m in warned), warned
    assert store.meta["recall_shortfall"] > 0
