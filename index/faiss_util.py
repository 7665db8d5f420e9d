"""FAISS helpers: which index kind for which size, building and tuning it for
recall@10 >= 0.95, search that drops FAISS's -1 padding, exact ground truth, a guarded
GPU move, and file IO with fsync and optional mmap.

Kinds (docs/index.md): exact `Flat` (IndexFlatIP) up to FLAT_MAX vectors, then
`IVF<nlist>,SQ8`: inverted lists of 8-bit scalar-quantised codes (a quarter of
float32). An approximate kind hands its best RERANK candidates to `rescore`, which ranks
them exactly from the raw float16 vectors the index version keeps (vectors.npy), so the
codes' error costs no recall, only the lists left unprobed do. All use the inner
product on L2-normalised vectors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from atri.training.fileio import fsync_file

log = logging.getLogger(__name__)

# One query: a flat scan costs ~0.08 ms per 1,000 vectors (512-d float32, memory bound);
# IVF over SQ8 codes with reranking a few ms at 100k to 1M, cheaper per query than an
# HNSW graph of the same recall and built in half its time (docs/benchmarks.md, issue 14).
FLAT_MAX = 20_000
HNSW_EF_CONSTRUCTION = 80
RERANK = 64  # candidates of an approximate index rescored exactly (meta.json "rerank")
TRAIN_MAX = 262_144  # k-means sample: 64 per list at nlist 4096 (FAISS asks >= 39)
TARGET_RECALL = 0.95  # recall@10 the approximate kinds are tuned to
RECALL_K = 10
TUNE_QUERIES = 1000
# Tried in order until the target recall is reached. Up to 4096: HNSW32 over 1M
# clustered vectors measured recall@10 0.80 at 1024 (docs/benchmarks.md).
EF_SEARCH_GRID = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
NPROBE_GRID = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024)
ADD_CHUNK = 65_536
# Query batches up to this size search an exact flat index with numpy (`search`).
NUMPY_MAX_QUERIES = 1


def configure() -> None:
    """Process-wide FAISS settings. Flat search of a batch of fewer than
    `distance_compute_blas_threshold` queries (default 20) runs one query per thread
    without BLAS, several times slower than one sgemm for the small batches the service
    sends (one query, or one per language)."""
    faiss.cvar.distance_compute_blas_threshold = 1


def choose_factory(n: int) -> str:
    """The index kind for `n` vectors: exact up to FLAT_MAX, else IVF over SQ8 codes with
    nlist ~ 4 sqrt(n), a power of two, as the FAISS wiki advises."""
    if n <= FLAT_MAX:
        return "Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    return f"IVF{min(nlist, 65_536)},SQ8"


def rescore(
    candidates: list[list[tuple[int, float]]], vectors: np.ndarray, queries: np.ndarray, k: int
) -> list[list[tuple[int, float]]]:
    """Per query, the exact top k of its candidate ids, scored from `vectors` ((N, E)
    float16, memmapped: only the candidates' rows are read), best first and equal scores
    by ascending id. The scores are those of an exact search over `vectors`."""
    out = []
    for hits, query in zip(candidates, queries, strict=True):
        rows = np.unique(np.fromiter((i for i, _ in hits), np.int64, len(hits)))  # sorted
        scores = np.asarray(vectors[rows], dtype=np.float32) @ query  # (C,)
        order = np.lexsort((rows, -scores))[:k]
        out.append([(int(rows[j]), float(scores[j])) for j in order])
    return out


def gpu_count() -> int:
    """GPUs FAISS can use: 0 on the CPU wheel (faiss-cpu imports fine there but has no
    GPU code, and nothing falls back by itself)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def maybe_to_gpu(index: faiss.Index) -> faiss.Index:
    """The index on all GPUs when faiss-gpu sees one, else unchanged."""
    if gpu_count() <= 0:
        return index
    log.info("using %d GPU(s) for %s", gpu_count(), type(index).__name__)
    return faiss.index_cpu_to_all_gpus(index)


def to_cpu(index: faiss.Index) -> faiss.Index:
    if gpu_count() > 0 and hasattr(faiss, "index_gpu_to_cpu"):
        try:
            return faiss.index_gpu_to_cpu(index)
        except (RuntimeError, TypeError):  # already a CPU index
            return index
    return index


def new_index(factory: str, dim: int) -> faiss.Index:
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    hnsw = getattr(_core(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return index


def build_index(
    factory: str, dim: int, chunks: Iterable[np.ndarray], train_sample: np.ndarray | None
) -> faiss.Index:
    """An index of `factory`, trained on `train_sample` when the kind needs training,
    with `chunks` ((n_i, dim) float32) added in order, so id i is the i-th vector."""
    index = new_index(factory, dim)
    if not index.is_trained:
        if train_sample is None or len(train_sample) == 0:
            raise ValueError(f"{factory} needs training vectors")
        trainer = maybe_to_gpu(index) if "IVF" in factory else index
        trainer.train(np.ascontiguousarray(train_sample, dtype=np.float32))
        index = to_cpu(trainer)
    for chunk in chunks:
        index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    return index


def _core(index: faiss.Index) -> Any:
    """The index under pre-transforms (OPQ, PCA, ...), downcast to its own class."""
    inner = faiss.downcast_index(index)
    while isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    return inner


def search_params_name(index: faiss.Index) -> str | None:
    """The run-time knob of an approximate kind: efSearch (HNSW) or nprobe (IVF)."""
    inner = _core(index)
    if hasattr(inner, "hnsw"):
        return "efSearch"
    if hasattr(inner, "nprobe"):
        return "nprobe"
    return None


def set_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    space = faiss.ParameterSpace()
    for name, value in params.items():
        if name not in ("efSearch", "nprobe"):
            raise ValueError(f"unknown search parameter {name!r}")
        space.set_index_parameter(index, name, int(value))


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, chunk: int = ADD_CHUNK) -> np.ndarray:
    """(Q, k) ids of the exact top-k by inner product, streaming `base` (memmap-able)
    in chunks; on a GPU when there is one."""
    k = min(k, len(base))
    best_d = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(base), chunk):
        flat = maybe_to_gpu(faiss.IndexFlatIP(base.shape[1]))
        flat.add(np.ascontiguousarray(base[start : start + chunk], dtype=np.float32))
        d, i = flat.search(queries, min(k, flat.ntotal))
        both_d = np.concatenate([best_d, d], axis=1)
        both_i = np.concatenate([best_i, i + start], axis=1)
        order = np.argsort(-both_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(both_d, order, axis=1)
        best_i = np.take_along_axis(both_i, order, axis=1)
    return best_i


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found_q ∩ truth_q| / k over queries (k-recall@k; -1 never counts)."""
    hits = [
        len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits) / truth.shape[1]) if len(truth) else 1.0


def tune(
    index: faiss.Index,
    base: np.ndarray,
    queries: np.ndarray,
    target: float = TARGET_RECALL,
    k: int = RECALL_K,
    rerank: int = 0,
) -> tuple[dict[str, int], float]:
    """The smallest efSearch / nprobe of the grid whose recall@k against exact search
    over `base` reaches `target` (the largest tried if none does, with a warning), with
    the best `rerank` candidates rescored from `base` as searches will (efSearch below
    `rerank` is not tried: the graph searches at least that deep anyway).
    Returns (search params, measured recall); ({}, 1.0) for an exact index."""
    name = search_params_name(index)
    if name is None or len(base) == 0:
        return {}, 1.0
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    truth = exact_knn(base, queries, k)
    k = truth.shape[1]
    grid: tuple[int, ...] = EF_SEARCH_GRID if name == "efSearch" else NPROBE_GRID
    if name == "efSearch" and rerank:
        grid = tuple(sorted({max(v, rerank) for v in grid}))
    if name == "nprobe":
        nlist = _core(index).nlist
        grid = tuple(v for v in grid if v < nlist) + (nlist,)
    recall = 0.0
    for value in grid:
        set_search_params(index, {name: value})
        if rerank:
            hits = rescore(search(index, queries, max(k, rerank)), base, queries, k)
            found = np.full((len(queries), k), -1, dtype=np.int64)
            for row, best in enumerate(hits):
                found[row, : len(best)] = [i for i, _ in best]
        else:
            _, found = index.search(queries, k)
        recall = recall_at_k(found, truth)
        log.info("tune %s=%d: recall@%d %.4f", name, value, k, recall)
        if recall >= target:
            return {name: value}, recall
    log.warning("recall@%d %.3f below target %.2f even at %s=%d", k, recall, target, name, value)
    return {name: value}, recall


def tuning_queries(vectors: np.ndarray, n: int = TUNE_QUERIES, seed: int = 0) -> np.ndarray:
    """A sample of `n` rows (float32), in file order for sequential memmap reads."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(n, len(vectors)), replace=False))
    return np.asarray(vectors[rows], dtype=np.float32)


def unseen_queries(vectors: np.ndarray, n: int = TUNE_QUERIES, seed: int = 0) -> np.ndarray:
    """Stand-ins for queries the index has not seen, when no real ones are at hand:
    sampled vectors moved by their nearest neighbour's distance in a random direction,
    re-normalised. The index's own points are found too easily (HNSW tuned on them gave
    recall@10 0.98 at an efSearch that gave 0.93 on fresh queries); these are harder
    than fresh ones, so tuning on them errs on the safe side."""
    sample = tuning_queries(vectors, n, seed)
    if len(vectors) < 2:
        return sample
    nearest = exact_knn(vectors, sample, 2)[:, 1]  # [:, 0] is the point itself
    neighbours = np.asarray(vectors[nearest], dtype=np.float32)  # (n, E)
    dist = np.linalg.norm(sample - neighbours, axis=1, keepdims=True)
    direction = np.random.default_rng(seed + 1).standard_normal(sample.shape).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    moved = sample + dist * direction
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def write_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(to_cpu(index), str(path))
    fsync_file(path)


def read_index(path: Path, mmap: bool = False) -> faiss.Index:
    """Read an index; `mmap` maps the file instead of reading it (large indices: pages
    load on demand and are shared between processes). The file is never written through.

    IO_FLAG_MMAP alone maps only IVF lists: flat codes (Flat, HNSW's storage) would be
    read into memory. IO_FLAG_MMAP_IFC maps those, but FAISS refuses it for IVF lists,
    which are then read with IO_FLAG_MMAP alone."""
    if not mmap:
        return faiss.read_index(str(path))
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    codes = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)  # FAISS >= 1.10
    if codes:
        try:
            return faiss.read_index(str(path), flags | codes)
        except RuntimeError:
            pass
    return faiss.read_index(str(path), flags)


def flat_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray | None] | None:
    """For an exact inner-product flat index (`Flat`, or `IDMap,Flat`): its (N, d)
    float32 vectors and, under an IDMap, its (N,) ids, as read-only views of FAISS's own
    memory (a mapped file too), never copies. None for any other kind.

    The views do not keep `index` alive: use them only while holding it."""
    inner: Any = faiss.downcast_index(index)  # the concrete class, with its attributes
    ids = None
    if isinstance(inner, faiss.IndexIDMap):  # IndexIDMap2 too
        ids = faiss.rev_swig_ptr(inner.id_map.data(), inner.ntotal)
        inner = faiss.downcast_index(inner.index)
    if type(inner) not in (faiss.IndexFlat, faiss.IndexFlatIP):
        return None
    if inner.metric_type != faiss.METRIC_INNER_PRODUCT or inner.ntotal == 0:
        return None
    vectors = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d)
    vectors = vectors.reshape(inner.ntotal, inner.d)
    vectors.flags.writeable = False  # may be a read-only mapping: a write would crash
    if ids is not None:
        ids.flags.writeable = False
    return vectors, ids


def _flat_top(
    vectors: np.ndarray, ids: np.ndarray | None, query: np.ndarray, k: int
) -> list[tuple[int, float]]:
    """Exact top-k of one query by a matrix-vector product. Of the clips tied at the k-th
    score the lowest positions are kept, so that the pages of one ranking (k, then a
    larger k) never overlap."""
    scores = vectors @ query  # (N,)
    n = len(scores)
    if k < n:
        kth = scores[np.argpartition(scores, n - k)[n - k :]].min()
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)[: k - len(above)]
        top = np.concatenate([above, tied])
    else:
        top = np.arange(n)
    labels = top if ids is None else ids[top]
    order = np.lexsort((labels, -scores[top]))
    return [(int(labels[j]), float(scores[top[j]])) for j in order]


def search(index: faiss.Index, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Top-k (id, score) per query, best first and equal scores by ascending id,
    without FAISS's -1 padding (fewer than k vectors, or an approximate index that
    found fewer).

    A single query on an exact flat index is a numpy matrix-vector product over FAISS's
    vectors (`flat_vectors`): FAISS takes 2-3x as long for one query; at two they are
    even, beyond that FAISS's blocked sgemm wins (docs/benchmarks.md). Both give the
    same ids, and scores within float32 rounding."""
    k = min(k, index.ntotal)
    if k <= 0:
        return [[] for _ in range(len(queries))]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    flat = flat_vectors(index) if len(queries) <= NUMPY_MAX_QUERIES else None
    if flat is not None:
        vectors, ids = flat
        return [_flat_top(vectors, ids, query, k) for query in queries]
    scores, found = index.search(queries, k)
    # FAISS lists equal scores in no defined order (a flat index: by descending id).
    return [
        sorted(
            ((int(i), float(s)) for i, s in zip(row_i, row_s, strict=True) if i >= 0),
            key=lambda hit: (-hit[1], hit[0]),
        )
        for row_i, row_s in zip(found, scores, strict=True)
    ]
