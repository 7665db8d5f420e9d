"""Filling Milvus collections from an index directory (docs/scaling.md):

    atri milvus-sync INDEX_DIR --uri URI [--prefix P] [--index-type T]
                                     [--replace | --merge]

The collections under the prefix are made to hold the directory's current version plus
its live changes: clips and captions are upserted, and rows the directory does not hold
are deleted, so a rebuilt index is synced by running it again. `--merge` adds instead
(the shards of a corpus embedded on several machines): nothing is deleted, and a caption
already present gains the shard's clip ids. The server's token comes from
ATRI_MILVUS_TOKEN, never from the command line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atri.index import layout, live
from atri.index.compact import CARRIED, caption_source, clip_records, clip_vectors
from atri.index.errors import IndexCorrupt, IndexMismatch, IndexNotFound
from atri.index.milvus import (
    BATCH,
    DEPTH,
    INDEX_TYPES,
    META_KEY,
    MilvusStore,
    Names,
    caption_key,
    connect,
    create_caption_collection,
    create_collections,
    is_lite,
    iterate,
    load,
)
from atri.index.version import Version
from atri.training.data.manifest import ClipRecord

log = logging.getLogger(__name__)

Row = dict[str, Any]


def read_index(root: Path) -> tuple[Version, live.LiveState]:
    """The current version of an index directory and its replayed live log."""
    number = layout.require_current(root)
    base = Version(layout.version_dir(root, number), number, mmap=True)
    path = root / layout.LIVE_LOG
    contents = live.read_log(path)
    state = live.LiveState(base.dim)
    if contents.base == number:
        state = live.replay(state, base, contents.entries, path)
    return base, state


def clip_rows(base: Version, state: live.LiveState) -> Iterator[Row]:
    """Base clips not deleted, then added ones, each with its stored vector."""
    records: Iterable[ClipRecord] = clip_records(base, state)
    vectors = (row for chunk in clip_vectors(base, state) for row in chunk)
    for record, vector in zip(records, vectors, strict=True):
        yield {"id": record.id, "vector": vector, "record": json.loads(record.to_json())}


def caption_rows(base: Version, state: live.LiveState, lang: str) -> Iterator[Row]:
    source = caption_source(base, state, lang)
    vectors = (row for chunk in source.vectors for row in chunk)
    for text, clip_ids, vector in zip(source.texts, source.clip_ids, vectors, strict=True):
        yield {"key": caption_key(text), "text": text, "vector": vector, "clip_ids": list(clip_ids)}


def batched(rows: Iterable[Row]) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def write_rows(client: Any, name: str, rows: Iterable[Row], key: str, merge: bool) -> int:
    """Upsert `rows`. Merging, a caption already present keeps its clip ids too;
    otherwise every row of `name` that `rows` did not name is deleted afterwards."""
    seen: set[str] = set()
    for batch in batched(rows):
        if merge and key == "key":
            found = client.get(name, ids=[r["key"] for r in batch], output_fields=["clip_ids"])
            before = {r["key"]: r["clip_ids"] for r in found}
            for row in batch:
                old = before.get(row["key"], [])
                row["clip_ids"] = old + [c for c in row["clip_ids"] if c not in old]
        client.upsert(name, batch)
        seen.update(row[key] for row in batch)
    if not merge:
        stale = [r[key] for b in iterate(client, name, [key]) for r in b if r[key] not in seen]
        for start in range(0, len(stale), BATCH):
            client.delete(name, ids=stale[start : start + BATCH])
    return len(seen)


def sync_index(
    root: str | Path,
    uri: str,
    prefix: str = "atri",
    *,
    token: str | None = None,
    index_type: str | None = None,
    replace: bool = False,
    merge: bool = False,
) -> dict[str, Any]:
    """Make the collections under `prefix` hold the index directory (or, `merge`, add it
    to them); returns the meta written. `index_type` (FLAT, IVF_FLAT, HNSW) applies to
    new collections: FLAT on milvus-lite, else HNSW. `replace` drops the collections
    first (another dimension, another index kind)."""
    root = Path(root).resolve()
    base, state = read_index(root)
    index_type = index_type or ("FLAT" if is_lite(uri) else "HNSW")
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index type {index_type!r}: one of {sorted(INDEX_TYPES)}")
    client = connect(uri, token)
    names = Names(prefix)
    try:
        if replace:
            for name in [names.clips, *map(names.captions, names.languages(client))]:
                client.drop_collection(name)
        meta = new_meta(base, root, index_type)
        if client.has_collection(names.clips):
            check_fits(client, names, meta, merge)
        else:
            create_collections(client, names, base.dim, index_type)
        load(client, uri, names.clips)
        n = write_rows(client, names.clips, clip_rows(base, state), "id", merge)
        langs = sorted(set(base.captions) | set(state.captions))
        if not merge:
            for lang in set(names.languages(client)) - set(langs):
                client.drop_collection(names.captions(lang))
        for lang in langs:
            name = names.captions(lang)
            if not client.has_collection(name):
                create_caption_collection(client, name, base.dim, index_type)
            load(client, uri, name)
            write_rows(client, name, caption_rows(base, state, lang), "key", merge)
            client.flush(name)
        client.alter_collection_properties(names.clips, properties={META_KEY: json.dumps(meta)})
        client.flush(names.clips)
    finally:
        client.close()
    log.info("synced %s (version %d, %d clips) into %s %s", root, base.number, n, uri, prefix)
    return meta


def new_meta(base: Version, root: Path, index_type: str) -> dict[str, Any]:
    meta = {key: base.meta[key] for key in CARRIED if key in base.meta}
    meta.update(dim=base.dim, metric="ip")
    meta["milvus"] = {
        "index_type": index_type,
        "index_dir": str(root),
        "version": base.number,
        "synced": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return meta


def check_fits(client: Any, names: Names, meta: dict[str, Any], merge: bool) -> None:
    """Existing collections must have the dimension, and to merge, the model too."""
    description = client.describe_collection(names.clips)
    dims = [int(f["params"]["dim"]) for f in description["fields"] if f["name"] == "vector"]
    if not dims:
        raise IndexCorrupt(f"{names.clips}: no vector field")
    if dims[0] != meta["dim"]:
        raise IndexMismatch(f"{names.clips} holds {dims[0]}-d vectors, the index {meta['dim']}-d")
    held = description.get("properties", {}).get(META_KEY)
    if merge and held is not None and json.loads(held).get("model") != meta.get("model"):
        raise IndexMismatch(f"{names.clips} holds vectors of another model; shards must share one")


def open_or_seed(
    uri: str,
    prefix: str = "atri",
    *,
    token: str | None = None,
    depth: int = DEPTH,
    seed: Path | None = None,
) -> MilvusStore:
    """The collections under `prefix`; when there are none and `seed` names an index
    directory, they are filled from it first."""
    try:
        return MilvusStore.open(uri, prefix, token=token, depth=depth)
    except IndexNotFound:
        if seed is None:
            raise
    log.info("milvus %s: no collections under %r; filling them from %s", uri, prefix, seed)
    sync_index(seed, uri, prefix, token=token)
    return MilvusStore.open(uri, prefix, token=token, depth=depth)
