"""`MilvusStore`: the index backend on Milvus (docs/scaling.md), through pymilvus'
`MilvusClient`: a Milvus server or cluster (`http://host:19530`) or milvus-lite, the
embedded engine, when the URI is a local `*.db` file.

Collections, named after a prefix (default `atri`):

    <prefix>_clips            id (primary key), vector, record (the manifest record, JSON);
                              the property `atri.meta` holds the index's meta (model
                              identity, checkpoint, source, dim)
    <prefix>_captions_<lang>  key (hash of text), text, vector, clip_ids (JSON list): each
                              distinct caption once, with the clips that carry it

Vectors are stored as IndexStore stores them (L2-normalised, rounded to float16) and
searched by inner product, so both backends give the same scores. Collections use strong
consistency: a change is visible to the next search. Ranks look `depth` results deep
(Milvus answers at most 16,384 per search by default); beyond, a rank is a lower bound.

Filled from an index directory by `atri.index.milvus_sync` (`python -m
atri.index.milvus_sync INDEX_DIR --uri URI`). Changes through the service touch several
collections, captions first: a crash in between leaves clip ids in captions that a retry
of the same add or delete repairs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from atri.index.backend import (
    CaptionHit,
    DepthRanks,
    Hit,
    as_queries,
    check_paging,
    distinct,
    new_clip_vectors,
)
from atri.index.errors import ClipExists, IndexCorrupt, IndexNotFound, UnknownClip
from atri.training.data.manifest import ClipRecord

log = logging.getLogger(__name__)

LIMIT = 16_384  # Milvus's default limit of results per search (topk, offset + limit)
DEPTH = LIMIT  # results ranks_and_topk looks at per query
BATCH = 1_000  # rows per insert or upsert request
META_KEY = "atri.meta"
INDEX_TYPES = {  # Milvus index kinds and their build parameters (cf. choose_factory)
    "FLAT": {},
    "IVF_FLAT": {"nlist": 1024},
    "HNSW": {"M": 32, "efConstruction": 80},
}
MAX_TEXT = 65_535  # bytes of a VARCHAR


def is_lite(uri: str) -> bool:
    """pymilvus' own rule: a URI ending in .db is a milvus-lite file."""
    return uri.endswith(".db")


def connect(uri: str, token: str | None = None) -> Any:
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token or "")


def load(client: Any, uri: str, name: str) -> None:
    """Load a collection. milvus-lite writes a segment's index file from a background
    thread without write-then-rename, so a process killed meanwhile leaves the file
    truncated and every later load fails. Index files are rebuilt from the segments when
    missing: such a load drops them and retries once."""
    from pymilvus.exceptions import MilvusException

    try:
        client.load_collection(name)
    except MilvusException as err:
        files = lite_index_files(uri, name) if is_lite(uri) else []
        if not files:
            raise
        log.warning("milvus %s: %s does not load (%s); rebuilding its %d index files",
                    uri, name, err, len(files))
        for path in files:
            path.unlink(missing_ok=True)
        client.load_collection(name)


def lite_index_files(uri: str, name: str) -> list[Path]:
    """The index files milvus-lite keeps beside a collection's segments."""
    return sorted(Path(uri).glob(f"collections/{name}/partitions/*/indexes/*.idx"))


def caption_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class Names:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.clips = f"{prefix}_clips"
        self.caption_prefix = f"{prefix}_captions_"

    def captions(self, lang: str) -> str:
        return self.caption_prefix + lang

    def languages(self, client: Any) -> list[str]:
        found = client.list_collections()
        n = len(self.caption_prefix)
        return sorted(c[n:] for c in found if c.startswith(self.caption_prefix))


def create_collections(client: Any, names: Names, dim: int, index_type: str) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("record", DataType.JSON)
    _create(client, names.clips, schema, index_type)


def create_caption_collection(client: Any, name: str, dim: int, index_type: str) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=32)
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("clip_ids", DataType.JSON)
    _create(client, name, schema, index_type)


def _create(client: Any, name: str, schema: Any, index_type: str) -> None:
    """Create and load a collection. Its index is built on an empty collection, so
    pymilvus' half-second polling for the build to finish (sync=True) is skipped."""
    params = client.prepare_index_params()
    params.add_index(
        field_name="vector",
        index_type=index_type,
        metric_type="IP",
        params=INDEX_TYPES[index_type],
    )
    client.create_collection(name, schema=schema, consistency_level="Strong")
    client.create_index(name, params, sync=False)
    client.load_collection(name)


class MilvusStore:
    """The `IndexBackend` on Milvus; open with `MilvusStore.open(uri)`."""

    def __init__(self, client: Any, names: Names, meta: dict[str, Any], *, uri: str, depth: int):
        self.client, self.names, self.uri, self.depth = client, names, uri, depth
        self._meta = meta
        self._langs = set(names.languages(client))
        self._write_lock = threading.Lock()
        # milvus-lite keeps unflushed rows in a log it does not fsync; a server
        # acknowledges an insert once its WAL holds it, and rate-limits flushes.
        self._flush = is_lite(uri)

    @classmethod
    def open(
        cls, uri: str, prefix: str = "atri", *, token: str | None = None, depth: int = DEPTH
    ) -> MilvusStore:
        """The collections under `prefix`; IndexNotFound when there are none."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        client = connect(uri, token)
        names = Names(prefix)
        if not client.has_collection(names.clips):
            raise IndexNotFound(f"{uri}: no collection {names.clips} (sync an index into it)")
        props = client.describe_collection(names.clips).get("properties", {})
        if META_KEY not in props:
            raise IndexCorrupt(f"{uri}: {names.clips} has no {META_KEY} property")
        meta = json.loads(props[META_KEY])
        for lang in names.languages(client):
            load(client, uri, names.captions(lang))
        load(client, uri, names.clips)
        store = cls(client, names, meta, uri=uri, depth=depth)
        log.info("milvus %s: %s, %d clips", uri, names.clips, len(store))
        return store

    # --- reading ---------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    @property
    def identity(self) -> dict[str, str]:
        return dict(self._meta["model"])

    @property
    def dim(self) -> int:
        return int(self._meta["dim"])

    @property
    def languages(self) -> list[str]:
        return sorted(self._langs)

    def _count(self, name: str) -> int:
        return int(self.client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def __len__(self) -> int:
        return self._count(self.names.clips)

    def __contains__(self, clip_id: object) -> bool:
        return isinstance(clip_id, str) and self.record(clip_id) is not None

    @property
    def captions_indexed(self) -> int:
        return sum(self._count(self.names.captions(lang)) for lang in self.languages)

    def ids(self) -> list[str]:
        out: list[str] = []
        for batch in iterate(self.client, self.names.clips, ["id"]):
            out += [row["id"] for row in batch]
        return out

    def record(self, clip_id: str) -> ClipRecord | None:
        rows = self.client.get(self.names.clips, ids=[clip_id], output_fields=["record"])
        return _record(rows[0]["record"]) if rows else None

    def vector(self, clip_id: str) -> np.ndarray | None:
        rows = self.client.get(self.names.clips, ids=[clip_id], output_fields=["vector"])
        return np.asarray(rows[0]["vector"], dtype=np.float32) if rows else None

    def _search(
        self, name: str, q: np.ndarray, limit: int, offset: int, fields: list[str]
    ) -> list[list[Any]]:
        return self.client.search(
            name,
            data=q,
            anns_field="vector",
            limit=limit,
            offset=offset,
            output_fields=fields,
            search_params={"metric_type": "IP"},
        )

    def search(self, queries: np.ndarray, k: int, offset: int = 0) -> list[list[Hit]]:
        """Per query (Q, E), clips ranked offset+1 .. offset+k (none past LIMIT)."""
        check_paging(k, offset)
        q = as_queries(queries, self.dim)
        if offset >= LIMIT:
            return [[] for _ in range(len(q))]
        found = self._search(self.names.clips, q, min(k, LIMIT - offset), offset, ["id"])
        return [[(hit["id"], float(hit["distance"])) for hit in hits] for hits in found]

    def search_captions(self, queries: np.ndarray, lang: str, k: int) -> list[list[CaptionHit]]:
        """Per query (Q, E), the k best distinct captions in `lang` with their clip ids."""
        check_paging(k, 0)
        q = as_queries(queries, self.dim)
        name = self.names.captions(lang)
        if lang not in self._langs:
            if not self.client.has_collection(name):  # another writer may have added it
                return [[] for _ in range(len(q))]
            load(self.client, self.uri, name)
            self._langs.add(lang)
        found = self._search(name, q, min(k, LIMIT), 0, ["text", "clip_ids"])
        return [
            [
                (hit["entity"]["text"], float(hit["distance"]), list(hit["entity"]["clip_ids"]))
                for hit in hits
            ]
            for hits in found
        ]

    def ranks_and_topk(self, queries: np.ndarray, k: int) -> DepthRanks:
        """Each query's max(depth, k) best clips in one search; ranks within them are
        exact (with a FLAT index), beyond them lower bounds (backend.DepthRanks)."""
        check_paging(k, 0)
        q = as_queries(queries, self.dim)
        depth = max(self.depth, k)
        found = self._search(self.names.clips, q, depth, 0, ["id"])
        hits = [[(hit["id"], float(hit["distance"])) for hit in row] for row in found]
        return DepthRanks(depth, q, hits, k, self.vector)

    # --- changing --------------------------------------------------------------------

    def add_clip(
        self,
        record: ClipRecord,
        audio_vec: np.ndarray,
        caption_vecs: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Add a clip (audio vector (E,), caption_vecs[lang] (C, E) parallel to
        record.captions[lang]); flushed before returning. Raises ClipExists,
        IndexMismatch, ValueError."""
        vector, caps = new_clip_vectors(record, audio_vec, caption_vecs, self.dim)
        with self._write_lock:
            if self.record(record.id) is not None:
                raise ClipExists(record.id)
            for lang, texts in record.captions.items():
                self._add_captions(lang, record.id, texts, caps[lang])
            row = {"id": record.id, "vector": vector, "record": json.loads(record.to_json())}
            self.client.insert(self.names.clips, [row])
            self._flush_changed(record)

    def _add_captions(self, lang: str, clip_id: str, texts: list[str], vectors: np.ndarray) -> None:
        name = self.names.captions(lang)
        if lang not in self._langs:
            if not self.client.has_collection(name):
                create_caption_collection(self.client, name, self.dim, self._index_type())
            load(self.client, self.uri, name)
            self._langs.add(lang)
        wanted = {caption_key(text): (j, text) for j, text in distinct(texts)}
        rows = []
        for row in self._caption_rows(name, list(wanted)):
            wanted.pop(row["key"])
            if clip_id not in row["clip_ids"]:
                row["clip_ids"] = [*row["clip_ids"], clip_id]
            rows.append(row)
        for key, (j, text) in wanted.items():
            rows.append({"key": key, "text": text, "vector": vectors[j], "clip_ids": [clip_id]})
        if rows:
            self.client.upsert(name, rows)

    def delete_clip(self, clip_id: str) -> None:
        """Remove a clip, and its captions where no other clip has them; flushed before
        returning. Raises UnknownClip."""
        with self._write_lock:
            record = self.record(clip_id)
            if record is None:
                raise UnknownClip(clip_id)
            for lang, texts in record.captions.items():
                if lang not in self._langs:
                    continue
                name = self.names.captions(lang)
                keys = [caption_key(text) for _, text in distinct(texts)]
                keep: list[dict[str, Any]] = []
                drop: list[dict[str, Any]] = []
                for row in self._caption_rows(name, keys):
                    row["clip_ids"] = [c for c in row["clip_ids"] if c != clip_id]
                    (keep if row["clip_ids"] else drop).append(row)
                if keep:
                    self.client.upsert(name, keep)
                if drop:
                    self.client.delete(name, ids=[row["key"] for row in drop])
            self.client.delete(self.names.clips, ids=[clip_id])
            self._flush_changed(record)

    def _caption_rows(self, name: str, keys: list[str]) -> list[dict[str, Any]]:
        if not keys:
            return []
        fields = ["key", "text", "vector", "clip_ids"]
        rows = self.client.get(name, ids=keys, output_fields=fields)
        return [{f: row[f] for f in fields} for row in rows]

    def _index_type(self) -> str:
        return str(self._meta.get("milvus", {}).get("index_type", "FLAT"))

    def _flush_changed(self, record: ClipRecord) -> None:
        if self._flush:
            langs = [lang for lang in record.captions if lang in self._langs]
            for name in [self.names.clips, *map(self.names.captions, langs)]:
                self.client.flush(name)

    def close(self) -> None:
        self.client.close()


def _record(obj: dict[str, Any]) -> ClipRecord:
    return ClipRecord(obj["id"], obj["audio"], obj.get("captions", {}), obj.get("meta", {}))


def iterate(client: Any, name: str, fields: list[str]) -> Iterator[list[dict[str, Any]]]:
    it = client.query_iterator(name, batch_size=BATCH, filter="", output_fields=fields)
    try:
        while batch := it.next():
            yield batch
    finally:
        it.close()
