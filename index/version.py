"""One immutable index version: `versions/<n>/` (docs/index.md, "Layout").

    meta.json            format version, factory, metric "ip", dim, search params,
                         measured recall, model identity, checkpoint, source, counts
    audio.faiss          the clip index; FAISS id i = line i of ids.txt
    ids.txt              clip ids, one a line
    vectors.npy          (N, E) float16, the raw clip vectors (exact ranks, re-indexing)
    records.jsonl        manifest records, audio paths absolute (+ .offsets.npy)
    captions/<lang>.*    per language: distinct captions with their clip ids (.jsonl +
                         .offsets.npy; a vocabulary label also has "vocabulary": true and
                         may have no clip), (C, E) float16 vectors (.npy), the FAISS index
                         (.faiss), and sorted text hashes for lookup (.hash.npy, .rows.npy)

The FAISS indices are built from the float16 vectors upcast, so FAISS scores and the
exact scores recomputed from vectors.npy agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from collections.abc import Iterable, Iterator, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from atri.index import faiss_util
from atri.index.errors import IndexCorrupt
from atri.training.data.manifest import ClipRecord

FORMAT_VERSION = 1
META = "meta.json"
RECALL_KEY = f"recall_at_{faiss_util.RECALL_K}"  # meta.json: recall tuning measured
CHUNK = 65_536  # vectors per read/write step: memory stays bounded on any corpus size


def text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def iter_rows(vectors: np.ndarray, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """(n_i, E) float32 chunks of a (memmapped) float16 matrix."""
    for start in range(0, len(vectors), chunk):
        yield np.asarray(vectors[start : start + chunk], dtype=np.float32)


# --- JSONL with a line-offset table: random access without loading the file ---------


def write_table(path: Path, rows: Iterable[str]) -> int:
    """Write one JSON document a line, and `<path>.offsets.npy` (n + 1 byte offsets)."""
    offsets = [0]
    with open(path, "wb") as f:
        for row in rows:
            data = row.encode("utf-8") + b"\n"
            f.write(data)
            offsets.append(offsets[-1] + len(data))
    np.save(offsets_path(path), np.asarray(offsets, dtype=np.int64))
    return len(offsets) - 1


def offsets_path(path: Path) -> Path:
    return path.with_name(path.name + ".offsets.npy")


class Table:
    """Read row i of a `write_table` file with one pread (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets = np.load(offsets_path(path), mmap_mode="r")
        self._fd = os.open(path, os.O_RDONLY)
        # A store swaps versions at compaction while searches may still read the old one:
        # its file closes when the last reference goes.
        self._close = weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> Any:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return json.loads(os.pread(self._fd, end - start, start))

    def __iter__(self) -> Iterator[Any]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    def close(self) -> None:
        self._close()


# --- writing -------------------------------------------------------------------------


@dataclass
class CaptionSource:
    """Distinct captions of one language, clip ids per caption, and their vectors.
    `labels`: the texts that are vocabulary labels (index/vocabulary.py), which stay in
    the index with no clip."""

    texts: Sequence[str]
    clip_ids: Sequence[Sequence[str]]
    vectors: Iterable[np.ndarray]  # (n_i, E) chunks, len(texts) rows in all
    labels: Set[str] = field(default_factory=frozenset)


def caption_row(text: str, clip_ids: Sequence[str], label: bool) -> str:
    """One line of captions/<lang>.jsonl. The flag is written only when set, so indices
    without a vocabulary keep the exact rows older versions of atri wrote and read."""
    row: dict[str, Any] = {"text": text, "clip_ids": list(clip_ids)}
    if label:
        row["vocabulary"] = True
    return json.dumps(row, ensure_ascii=False)


def write_matrix(path: Path, n: int, dim: int, chunks: Iterable[np.ndarray]) -> np.ndarray:
    """Stream chunks into an (n, dim) float16 .npy; returns it memmapped read-only."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    done = 0
    for chunk in chunks:
        if chunk.ndim != 2 or chunk.shape[1] != dim or done + len(chunk) > n:
            raise ValueError(f"{path.name}: chunk of shape {chunk.shape} at row {done} of {n}")
        out[done : done + len(chunk)] = chunk
        done += len(chunk)
    if done != n:
        raise ValueError(f"{path.name}: expected {n} rows, got {done}")
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def write_faiss(
    path: Path,
    vectors: np.ndarray,
    factory: str | None,
    queries: np.ndarray | None,
    recall_target: float = faiss_util.TARGET_RECALL,
) -> dict[str, Any]:
    """Build, tune and write the FAISS index of `vectors` (float16 memmap). `factory`
    None chooses by size. Returns the meta.json entry of the index, with the recall
    tuning reached and by how much it fell short of `recall_target` (0 when met)."""
    n, dim = vectors.shape
    chosen = factory or faiss_util.choose_factory(n)
    train = None
    if not faiss_util.new_index(chosen, dim).is_trained:
        train = faiss_util.tuning_queries(vectors, n=min(n, faiss_util.TRAIN_MAX), seed=1)
    index = faiss_util.build_index(chosen, dim, iter_rows(vectors), train)
    params: dict[str, int] = {}
    recall = 1.0  # an exact index
    rerank = 0
    if faiss_util.search_params_name(index) is not None:
        rerank = faiss_util.RERANK
        if queries is None or len(queries) == 0:
            queries = faiss_util.unseen_queries(vectors)
        params, recall = faiss_util.tune(
            index, vectors, queries, target=recall_target, rerank=rerank
        )
    faiss_util.write_index(index, path)
    return {
        "factory": chosen,
        "factory_auto": factory is None,
        "search_params": params,
        **({"rerank": rerank} if rerank else {}),
        RECALL_KEY: round(recall, 4),
        "recall_target": recall_target,
        "recall_shortfall": round(max(recall_target - recall, 0.0), 4),
        "ntotal": int(index.ntotal),
    }


def recall_warnings(meta: dict[str, Any]) -> list[str]:
    """One line per FAISS index of a version (clips, then captions per language) whose
    tuning fell short of its recall target: the served results miss that many of the
    true top 10. Versions written before `recall_shortfall` existed are measured
    against TARGET_RECALL."""
    entries = [
        ("clip index", meta),
        *((f"{lang} caption index", e) for lang, e in sorted(meta.get("captions", {}).items())),
    ]
    warnings = []
    for name, entry in entries:
        if RECALL_KEY not in entry:
            continue
        target = entry.get("recall_target", faiss_util.TARGET_RECALL)
        shortfall = entry.get("recall_shortfall", target - entry[RECALL_KEY])
        if shortfall > 0:
            params = ", ".join(f"{k}={v}" for k, v in entry.get("search_params", {}).items())
            warnings.append(
                f"{name} ({entry.get('factory')}): recall@{faiss_util.RECALL_K} "
                f"{entry[RECALL_KEY]:.3f}, {shortfall:.3f} below the target {target:.2f}"
                + (f" at {params}, the largest tried" if params else "")
            )
    return warnings


def write_version(
    out: Path,
    *,
    dim: int,
    ids: Sequence[str],
    records: Iterable[ClipRecord],
    vectors: Iterable[np.ndarray],
    captions: dict[str, CaptionSource],
    factory: str | None,
    meta: dict[str, Any],
    recall_target: float = faiss_util.TARGET_RECALL,
) -> dict[str, Any]:
    """Write a complete version into the (staging) folder `out`; returns its meta.json.
    `records` and `vectors` follow `ids`' order; `meta` adds model, checkpoint, source.
    Approximate indices are tuned to `recall_target` (recall@10)."""
    n = len(ids)
    clip_vectors = write_matrix(out / "vectors.npy", n, dim, vectors)
    (out / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    written = write_table(out / "records.jsonl", (r.to_json() for r in records))
    if written != n:
        raise ValueError(f"records: expected {n}, got {written}")
    caption_dir = out / "captions"
    caption_dir.mkdir()
    caption_meta: dict[str, Any] = {}
    query_pool: list[np.ndarray] = []
    audio_queries = faiss_util.tuning_queries(clip_vectors) if n else None
    for lang, source in captions.items():
        matrix = write_matrix(caption_dir / f"{lang}.npy", len(source.texts), dim, source.vectors)
        write_table(
            caption_dir / f"{lang}.jsonl",
            (
                caption_row(t, c, t in source.labels)
                for t, c in zip(source.texts, source.clip_ids, strict=True)
            ),
        )
        hashes = np.fromiter((text_hash(t) for t in source.texts), np.uint64, len(source.texts))
        order = np.argsort(hashes, kind="stable")
        np.save(caption_dir / f"{lang}.hash.npy", hashes[order])
        np.save(caption_dir / f"{lang}.rows.npy", order.astype(np.int64))
        entry = write_faiss(
            caption_dir / f"{lang}.faiss", matrix, factory, audio_queries, recall_target
        )
        caption_meta[lang] = {"n": len(source.texts), **entry}
        if len(source.texts):
            query_pool.append(faiss_util.tuning_queries(matrix, n=faiss_util.TUNE_QUERIES // 4))
    # Captions are the queries the clip index serves; without any, write_faiss makes
    # stand-ins (faiss_util.unseen_queries).
    text_queries = np.concatenate(query_pool) if query_pool else None
    audio_entry = write_faiss(
        out / "audio.faiss", clip_vectors, factory, text_queries, recall_target
    )
    full = {
        "format_version": FORMAT_VERSION,
        "metric": "ip",
        "dim": dim,
        "n_clips": n,
        **audio_entry,
        "captions": caption_meta,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
    }
    (out / META).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return full


# --- reading -------------------------------------------------------------------------


def search_index(
    index: Any, vectors: np.ndarray, rerank: int, queries: np.ndarray, k: int
) -> list[list[tuple[int, float]]]:
    """Top-k (row, score) per query of one FAISS index of a version; an approximate one
    (`rerank` > 0) hands its best max(k, rerank) to exact rescoring from `vectors`."""
    if not rerank:
        return faiss_util.search(index, queries, k)
    candidates = faiss_util.search(index, queries, max(k, rerank))
    return faiss_util.rescore(candidates, vectors, queries, k)


def read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IndexCorrupt(f"{path / META}: missing") from exc
    except json.JSONDecodeError as exc:
        raise IndexCorrupt(f"{path / META}: bad JSON: {exc}") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexCorrupt(
            f"{path / META}: format_version {meta.get('format_version')!r}, "
            f"this atri reads {FORMAT_VERSION}"
        )
    return meta


class CaptionIndex:
    """The distinct captions of one language in a version."""

    def __init__(self, folder: Path, lang: str, meta: dict[str, Any], mmap: bool) -> None:
        self.lang = lang
        self.table = Table(folder / f"{lang}.jsonl")
        self.vectors = np.load(folder / f"{lang}.npy", mmap_mode="r")  # (C, E) float16
        self.index = faiss_util.read_index(folder / f"{lang}.faiss", mmap)
        faiss_util.set_search_params(self.index, meta.get("search_params", {}))
        self.rerank = int(meta.get("rerank", 0))  # absent before compact kinds: 0
        self._hashes = np.load(folder / f"{lang}.hash.npy", mmap_mode="r")
        self._rows = np.load(folder / f"{lang}.rows.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.table)

    def entry(self, row: int) -> tuple[str, list[str]]:
        obj = self.table[row]
        return obj["text"], obj["clip_ids"]

    def is_label(self, row: int) -> bool:
        """Whether the row is a vocabulary label (kept even when no clip carries it)."""
        return bool(self.table[row].get("vocabulary", False))

    def row_of(self, text: str) -> int | None:
        """The row of a caption string, by binary search over the hashes."""
        h = np.uint64(text_hash(text))
        lo = int(np.searchsorted(self._hashes, h, side="left"))
        while lo < len(self._hashes) and self._hashes[lo] == h:
            row = int(self._rows[lo])
            if self.entry(row)[0] == text:
                return row
            lo += 1
        return None


OVERLAY = "overlay.json"


@dataclass(frozen=True)
class Overlay:
    """What a version holds beyond its source (docs/index.md, "Rebuilding a served
    index"): clips that came through live changes (`POST /clips`), in order, and source
    clips deleted through them. A rebuild from the source carries both over; a
    compaction keeps them up to date."""

    added: tuple[str, ...] = ()
    deleted: frozenset[str] = frozenset()

    def empty(self) -> bool:
        return not self.added and not self.deleted

    def write(self, folder: Path) -> None:
        """Into a staging folder (published with it); nothing when empty."""
        if not self.empty():
            body = {"added": list(self.added), "deleted": sorted(self.deleted)}
            (folder / OVERLAY).write_text(json.dumps(body) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> Overlay:
        try:
            body = json.loads((folder / OVERLAY).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except json.JSONDecodeError as exc:
            raise IndexCorrupt(f"{folder / OVERLAY}: bad JSON: {exc}") from exc
        return cls(tuple(body.get("added", ())), frozenset(body.get("deleted", ())))


class Version:
    """A published version opened for reading (immutable; safe to share across threads)."""

    def __init__(self, path: Path, number: int, mmap: bool = False) -> None:
        self.path, self.number = path, number
        self.meta = read_meta(path)
        self.dim = int(self.meta["dim"])
        try:
            self.ids = (path / "ids.txt").read_text(encoding="utf-8").splitlines()
            self.position = {clip_id: i for i, clip_id in enumerate(self.ids)}
            self.vectors = np.load(path / "vectors.npy", mmap_mode="r")  # (N, E) float16
            self.records = Table(path / "records.jsonl")
            self.index = faiss_util.read_index(path / "audio.faiss", mmap)
            faiss_util.set_search_params(self.index, self.meta.get("search_params", {}))
            self.rerank = int(self.meta.get("rerank", 0))  # absent before compact kinds: 0
            self.captions = {
                lang: CaptionIndex(path / "captions", lang, entry, mmap)
                for lang, entry in self.meta.get("captions", {}).items()
            }
            self.overlay = Overlay.read(path)
        except (OSError, ValueError, RuntimeError) as exc:
            raise IndexCorrupt(f"{path}: cannot open index version: {exc}") from exc

    def record(self, position: int) -> ClipRecord:
        obj = self.records[position]
        return ClipRecord(obj["id"], obj["audio"], obj.get("captions", {}), obj.get("meta", {}))

    def iter_records(self) -> Iterator[ClipRecord]:
        for obj in self.records:
            yield ClipRecord(obj["id"], obj["audio"], obj.get("captions", {}), obj.get("meta", {}))

    def close(self) -> None:
        self.records.close()
        for caption in self.captions.values():
            caption.table.close()
