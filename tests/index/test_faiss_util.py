"""`faiss_util.search`: the numpy path for one query on an exact flat index against FAISS's
own exact search (random data, many n and k, IDMap, removals, ties, mmap), and the views
it reads being FAISS's memory rather than copies."""

from __future__ import annotations

import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from atri.index import faiss_util
from atri.index.store import IndexStore


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def faiss_hits(index: faiss.Index, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's exact search of one query, padding dropped: (ids, scores)."""
    scores, ids = index.search(query[None], min(k, index.ntotal))
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]


def assert_same(
    hits: list[tuple[int, float]], ids: np.ndarray, scores: np.ndarray, exact: dict[int, float]
) -> None:
    """The same ranking as FAISS's, scores within 1e-5. Two float32 sums of one dot
    product may round apart, so where two clips score within 1e-5 of each other either
    order is right: at every place, the id given must score (`exact`, float64) within
    1e-5 of the id FAISS gives there. Without such near-ties, the ids are identical."""
    assert len(hits) == len(ids) == len({i for i, _ in hits})
    np.testing.assert_allclose([s for _, s in hits], scores, rtol=0, atol=1e-5)
    for (got, _), want in zip(hits, ids.tolist(), strict=True):
        assert got == want or abs(exact[got] - exact[want]) < 1e-5, (got, want)


def exact_scores(vectors: np.ndarray, query: np.ndarray, ids=None) -> dict[int, float]:
    scores = vectors.astype(np.float64) @ query.astype(np.float64)
    labels = range(len(vectors)) if ids is None else ids.tolist()
    return dict(zip(labels, scores.tolist(), strict=True))


def flat(vectors: np.ndarray, factory: str = "Flat") -> faiss.Index:
    return faiss_util.build_index(factory, vectors.shape[1], [vectors], None)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000, 5000])
@pytest.mark.parametrize("dim", [16, 64])
def test_one_query_matches_faiss_exact_search(n, dim):
    rng = np.random.default_rng(n * 100 + dim)
    vectors = unit(rng, n, dim)
    index = flat(vectors)
    assert faiss_util.flat_vectors(index) is not None  # the numpy path is taken
    for query in unit(rng, 5, dim):
        exact = exact_scores(vectors, query)
        for k in sorted({1, 3, 10, n, n + 5}):
            hits = faiss_util.search(index, query[None], k)[0]
            assert_same(hits, *faiss_hits(index, query, k), exact)


@pytest.mark.parametrize("factory", ["IDMap,Flat", "IDMap2,Flat"])
def test_idmap_returns_the_mapped_ids(factory):
    rng = np.random.default_rng(5)
    vectors = unit(rng, 800, 32)
    labels = rng.permutation(10_000)[:800].astype(np.int64) * 7 + 3
    index = faiss_util.new_index(factory, 32)
    index.add_with_ids(vectors, labels)
    for query in unit(rng, 4, 32):
        exact = exact_scores(vectors, query, labels)
        for k in (1, 10, 800, 900):
            hits = faiss_util.search(index, query[None], k)[0]
            assert_same(hits, *faiss_hits(index, query, k), exact)


def test_removed_vectors_are_not_found():
    rng = np.random.default_rng(6)
    vectors = unit(rng, 500, 32)
    plain = flat(vectors)
    mapped = faiss_util.new_index("IDMap,Flat", 32)
    mapped.add_with_ids(vectors, np.arange(500, dtype=np.int64))
    removed = np.arange(0, 500, 3, dtype=np.int64)
    kept = np.setdiff1d(np.arange(500), removed)
    for index, labels in ((plain, np.arange(len(kept))), (mapped, kept)):
        assert index.remove_ids(removed) == len(removed)  # a flat index closes the gaps
        for query in vectors[:6]:  # the removed ones among them must not come back
            hits = faiss_util.search(index, query[None], 20)[0]
            assert_same(
                hits, *faiss_hits(index, query, 20), exact_scores(vectors[kept], query, labels)
            )
    found = {i for i, _ in faiss_util.search(mapped, vectors[:1], 500)[0]}
    assert len(found) == len(kept) and not found & set(removed.tolist())


def test_ties_are_kept_and_listed_by_ascending_id():
    rng = np.random.default_rng(7)
    distinct = unit(rng, 5, 16)
    vectors = distinct[rng.integers(0, 5, 3000)]  # ~600 exact copies of each
    index = flat(vectors)
    queries = unit(rng, 3, 16)
    for query, batch_query in zip(queries, range(3), strict=True):
        exact = exact_scores(vectors, query)
        # float64 scores of copies are equal: ties broken by the lower id
        reference = sorted(exact, key=lambda i: (-exact[i], i))
        for k in (1, 7, 20, 650, 3000):
            hits = faiss_util.search(index, query[None], k)[0]
            assert [i for i, _ in hits] == reference[:k]
            # FAISS's blocked sgemm may score copies an ulp apart, so which copies it
            # keeps at the k-th place is its own; within float32 rounding it agrees, and
            # its equal scores are listed by ascending id too.
            from_faiss = faiss_util.search(index, queries, k)[batch_query]
            assert_same(hits, *faiss_hits(index, query, k), exact)
            keys = [(-s, i) for i, s in from_faiss]
            assert keys == sorted(keys)
        # pages of one ranking (a larger k, then a slice) never overlap
        ten, twenty = (faiss_util.search(index, query[None], k)[0] for k in (10, 650))
        assert twenty[:10] == ten


def test_other_kinds_use_faiss():
    rng = np.random.default_rng(8)
    vectors = unit(rng, 300, 16)
    hnsw = faiss_util.build_index("HNSW32", 16, [vectors], None)
    l2 = faiss.IndexFlatL2(16)
    l2.add(vectors)
    for index in (hnsw, l2, faiss.IndexFlatIP(16)):
        assert faiss_util.flat_vectors(index) is None
    assert faiss_util.search(faiss.IndexFlatIP(16), vectors[:1], 5) == [[]]
    hits = faiss_util.search(hnsw, vectors[:1], 5)[0]
    assert hits[0][0] == 0 and len(hits) == 5


def test_the_vectors_are_a_read_only_view_of_faiss_memory():
    rng = np.random.default_rng(9)
    index = flat(unit(rng, 1000, 32))
    vectors, ids = faiss_util.flat_vectors(index)
    again, _ = faiss_util.flat_vectors(index)
    address = vectors.__array_interface__["data"][0]
    assert address == int(faiss.downcast_index(index).get_xb())  # no copy
    assert again.__array_interface__["data"][0] == address
    assert ids is None and vectors.shape == (1000, 32) and not vectors.flags.writeable
    assert not vectors.flags.owndata


def mapping_of(address: int) -> str | None:
    """The /proc/self/maps line whose range holds `address`."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
        if lo <= address < hi:
            return line
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("factory", ["Flat", "IDMap,Flat"])
def test_mmap_read_index_is_searched_in_the_mapped_file(tmp_path, factory):
    rng = np.random.default_rng(10)
    vectors = unit(rng, 2000, 32)
    index = faiss_util.new_index(factory, 32)
    if "IDMap" in factory:
        index.add_with_ids(vectors, np.arange(2000, dtype=np.int64) * 2)
    else:
        index.add(vectors)
    path = tmp_path / "a.faiss"
    faiss_util.write_index(index, path)
    mapped = faiss_util.read_index(path, mmap=True)
    view, _ = faiss_util.flat_vectors(mapped)
    where = mapping_of(view.__array_interface__["data"][0])
    assert where is not None and where.endswith(str(path)), where
    assert where.split()[1].startswith("r"), where  # mapped read-only
    labels = faiss_util.flat_vectors(index)[1]
    for query in unit(rng, 4, 32):
        exact = exact_scores(vectors, query, labels)
        for k in (1, 10, 2500):
            hits = faiss_util.search(mapped, query[None], k)[0]
            assert_same(hits, *faiss_hits(index, query, k), exact)


def test_mmap_still_reads_ivf_and_hnsw(tmp_path):
    rng = np.random.default_rng(11)
    vectors = unit(rng, 2000, 16)
    for factory in ("IVF8,Flat", "HNSW32"):
        index = faiss_util.build_index(factory, 16, [vectors], vectors)
        path = tmp_path / f"{factory.replace(',', '_')}.faiss"
        faiss_util.write_index(index, path)
        mapped = faiss_util.read_index(path, mmap=True)
        assert mapped.ntotal == 2000
        assert faiss_util.search(mapped, vectors[:2], 3) == faiss_util.search(index, vectors[:2], 3)


def test_store_single_queries_equal_an_exact_pass_after_changes(tmp_path, kit):
    """Tombstones (deleted base clips) and added clips around the numpy path: a store's
    one-query search equals the top k of the exact pass over the stored vectors."""
    root = tmp_path / "idx"
    records, stored = kit.make_index(root, n=300)
    store = IndexStore.open(root)
    for record in records[::4]:
        store.delete_clip(record.id)
    rng = np.random.default_rng(12)
    for i, vec in enumerate(kit.unit(rng, 5)):
        store.add_clip(type(records[0])(f"new{i}", "/new.wav", {}, {}), vec)
    for q in np.concatenate([stored[:6], kit.unit(rng, 4)]):
        for k in (1, 10, 400):
            hits = store.search(q[None], k)[0]
            exact = store.ranks_and_topk(q[None], k).topk[0]
            assert [i for i, _ in hits] == [i for i, _ in exact]
            np.testing.assert_allclose([s for _, s in hits], [s for _, s in exact], atol=1e-5)
    assert not {r.id for r in records[::4]} & {i for i, _ in store.search(stored[:1], 400)[0]}
