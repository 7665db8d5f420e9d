"""Live changes on top of an immutable version: the append-only log that makes them
durable, and the in-memory delta (added clips, tombstones of deleted ones) they build.

Log (`INDEX_DIR/live.log`, docs/index.md "Live log"): one change a line,

    <crc32 of the JSON, 8 hex digits> <JSON>\\n

The first line is the header `{"op": "base", "version": n, "dim": E}`: the version
the changes apply to. A log for an older version is stale (its changes were compacted
into a newer one) and is ignored, then replaced. Each change is written and fsync'd
before the store reports success. A last line that is incomplete or fails its
checksum is a torn write from a crash (the change was never acknowledged) and is
ignored with a warning; any other bad line is IndexCorrupt.

The delta is immutable (`LiveState`): a change builds a new state, so searching
threads read a consistent snapshot while one writer works.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from atri.index.backend import distinct
from atri.index.errors import ClipExists, IndexChanged, IndexCorrupt, UnknownClip
from atri.index.version import Version
from atri.training.data.manifest import ClipRecord
from atri.training.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

# --- log lines -------------------------------------------------------------------------


def encode_line(obj: dict[str, Any]) -> bytes:
    payload = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    data = payload.encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(data), data)


def decode_line(line: bytes) -> dict[str, Any]:
    """One line without its newline -> the JSON object; ValueError if damaged."""
    crc, sep, data = line.partition(b" ")
    if not sep or len(crc) != 8:
        raise ValueError("no checksum field")
    if int(crc, 16) != zlib.crc32(data):
        raise ValueError("checksum mismatch")
    obj = json.loads(data.decode("utf-8"))
    if not isinstance(obj, dict) or "op" not in obj:
        raise ValueError("not a change object")
    return obj


def pack(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f2").tobytes()).decode("ascii")


def unpack(text: str, dim: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32).reshape(-1, dim)


@dataclass
class LogContents:
    base: int | None  # version in the header; None: no log, or not even a header
    entries: list[dict[str, Any]]
    good_size: int  # bytes of intact lines; anything beyond is a torn tail


def read_log(path: Path) -> LogContents:
    """Parse the log; a torn last line is dropped with a warning, other damage raises."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LogContents(None, [], 0)
    *complete, tail = data.split(b"\n")  # tail: bytes after the last newline
    objs: list[dict[str, Any]] = []
    good = 0
    for lineno, line in enumerate(complete, start=1):
        try:
            obj = decode_line(line)
        except (ValueError, UnicodeDecodeError) as exc:
            if lineno == len(complete) and not tail:
                log.warning("%s:%d: ignoring torn last line (%s)", path, lineno, exc)
                break
            raise IndexCorrupt(f"{path}:{lineno}: corrupt live-log line ({exc})") from exc
        objs.append(obj)
        good += len(line) + 1
    else:
        if tail:  # no newline after it: the write never finished, nor was acknowledged
            log.warning("%s:%d: ignoring torn last line (incomplete)", path, len(complete) + 1)
    if not objs:
        return LogContents(None, [], good)
    header, entries = objs[0], objs[1:]
    if header.get("op") != "base" or not isinstance(header.get("version"), int):
        raise IndexCorrupt(f"{path}:1: expected the header {{'op': 'base', 'version': n}}")
    for i, entry in enumerate(entries, start=1):
        if entry.get("seq") != i:
            raise IndexCorrupt(f"{path}:{i + 1}: sequence number {entry.get('seq')}, expected {i}")
    return LogContents(header["version"], entries, good)


def reset_log(path: Path, base: int, dim: int) -> int:
    """Atomically replace the log by a bare header for `base`; returns its size."""
    header = encode_line({"op": "base", "version": base, "dim": dim})
    atomic_write_bytes(path, header)
    return len(header)


class LiveLog:
    """Appends changes for one base version. Call under `layout.locked(root)`."""

    def __init__(self, path: Path, base: int, dim: int, contents: LogContents) -> None:
        self.path, self.base, self.dim = path, base, dim
        self._stale = contents.base != base  # missing or older: replace before appending
        self._good_size = contents.good_size
        self._seq = len(contents.entries) if not self._stale else 0

    def append(self, change: dict[str, Any]) -> None:
        """Write one change and fsync it: once this returns the change survives a crash."""
        if self._stale:
            now = read_log(self.path)
            if now.base == self.base and now.entries:  # another store of ours wrote it
                raise IndexChanged(f"{self.path} was changed by another process; reopen")
            if now.base == self.base:  # the publisher of our version reset it meanwhile
                self._good_size = now.good_size
            else:
                self._good_size = reset_log(self.path, self.base, self.dim)
            self._stale, self._seq = False, 0
        self._drop_torn_tail()
        line = encode_line({**change, "seq": self._seq + 1})
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._seq += 1
        self._good_size += len(line)

    def reset(self, base: int) -> None:
        self._good_size = reset_log(self.path, base, self.dim)
        self.base, self._seq, self._stale = base, 0, False

    def _drop_torn_tail(self) -> None:
        """Cut a torn tail off before appending, or the next line would follow garbage.
        Intact lines past what this store read mean another process wrote: refuse."""
        size = self.path.stat().st_size
        if size == self._good_size:
            return
        with open(self.path, "rb") as f:
            f.seek(self._good_size)
            tail = f.read()
        if size < self._good_size or any(_intact(t) for t in tail.split(b"\n")[:-1]):
            raise IndexChanged(f"{self.path} was changed by another process; reopen the index")
        log.warning("%s: truncating a torn tail of %d bytes", self.path, size - self._good_size)
        os.truncate(self.path, self._good_size)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _intact(line: bytes) -> bool:
    try:
        decode_line(line)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


# --- the delta -------------------------------------------------------------------------


@dataclass(frozen=True)
class LangDelta:
    """Caption changes in one language. Captions already in the base gain clips through
    `base_extra`; only strings the base lacks get a vector here, so every caption stays
    distinct. `dead_rows`: base captions none of whose clips is live any more (never a
    vocabulary label)."""

    texts: tuple[str, ...]
    vectors: np.ndarray  # (T, E) float32
    clip_ids: tuple[tuple[str, ...], ...]
    base_extra: dict[int, tuple[str, ...]] = field(default_factory=dict)
    dead_rows: frozenset[int] = frozenset()


@dataclass(frozen=True)
class LiveState:
    """Changes since the base version: tombstoned base ids and added clips."""

    dim: int
    tombstones: frozenset[str] = frozenset()
    ids: tuple[str, ...] = ()
    vectors: np.ndarray | None = None  # (D, E) float32
    records: dict[str, ClipRecord] = field(default_factory=dict)
    captions: dict[str, LangDelta] = field(default_factory=dict)

    @property
    def matrix(self) -> np.ndarray:
        return self.vectors if self.vectors is not None else np.zeros((0, self.dim), np.float32)

    def empty(self) -> bool:
        return not self.tombstones and not self.ids

    def lang(self, lang: str) -> LangDelta:
        found = self.captions.get(lang)
        return found or LangDelta((), np.zeros((0, self.dim), np.float32), ())


def is_live(state: LiveState, base: Version, clip_id: str) -> bool:
    if clip_id in state.records:
        return True
    return clip_id in base.position and clip_id not in state.tombstones


def _base_row(base: Version, lang: str, text: str) -> int | None:
    index = base.captions.get(lang)
    return index.row_of(text) if index is not None else None


def _with_dead_rows(
    ld: LangDelta, base: Version, lang: str, rows: set[int], tomb: frozenset[str]
) -> LangDelta:
    """Recompute whether each of `rows` (base captions touched by a change) is dead. A
    vocabulary label never is: it labels uploads whether or not a clip carries it."""
    dead = set(ld.dead_rows)
    index = base.captions[lang]
    for row in rows:
        _, clips = index.entry(row)
        if ld.base_extra.get(row) or any(c not in tomb for c in clips) or index.is_label(row):
            dead.discard(row)
        else:
            dead.add(row)
    return replace(ld, dead_rows=frozenset(dead))


def apply_add(
    state: LiveState,
    base: Version,
    record: ClipRecord,
    vector: np.ndarray,
    caption_vectors: dict[str, np.ndarray],
) -> LiveState:
    """State with `record` added (vector (E,), caption_vectors[lang] (C, E) parallel to
    record.captions[lang]). Raises ClipExists."""
    if is_live(state, base, record.id):
        raise ClipExists(record.id)
    captions = dict(state.captions)
    for lang, texts in record.captions.items():
        ld = state.lang(lang)
        extra = dict(ld.base_extra)
        own = {t: i for i, t in enumerate(ld.texts)}
        new_texts, new_clips = list(ld.texts), [list(c) for c in ld.clip_ids]
        new_vecs: list[np.ndarray] = []
        touched: set[int] = set()
        for j, text in distinct(texts):
            row = _base_row(base, lang, text)
            if row is not None:
                extra[row] = (*extra.get(row, ()), record.id)
                touched.add(row)
            elif text in own:
                new_clips[own[text]].append(record.id)
            else:
                own[text] = len(new_texts)
                new_texts.append(text)
                new_clips.append([record.id])
                new_vecs.append(caption_vectors[lang][j])
        vecs = np.concatenate([ld.vectors, np.asarray(new_vecs, np.float32).reshape(-1, state.dim)])
        ld = LangDelta(tuple(new_texts), vecs, tuple(map(tuple, new_clips)), extra, ld.dead_rows)
        captions[lang] = _with_dead_rows(ld, base, lang, touched, state.tombstones)
    return replace(
        state,
        ids=(*state.ids, record.id),
        vectors=np.concatenate([state.matrix, vector[None].astype(np.float32)]),
        records={**state.records, record.id: record},
        captions=captions,
    )


def apply_delete(state: LiveState, base: Version, clip_id: str) -> LiveState:
    """State without `clip_id`: an added clip leaves the delta, a base clip gets a
    tombstone. Raises UnknownClip."""
    if clip_id in state.records:
        record = state.records[clip_id]
        keep = [i for i, c in enumerate(state.ids) if c != clip_id]
        tomb = state.tombstones
        state = replace(
            state,
            ids=tuple(state.ids[i] for i in keep),
            vectors=state.matrix[keep],
            records={k: v for k, v in state.records.items() if k != clip_id},
        )
    elif clip_id in base.position and clip_id not in state.tombstones:
        record = base.record(base.position[clip_id])
        tomb = state.tombstones | {clip_id}
        state = replace(state, tombstones=tomb)
    else:
        raise UnknownClip(clip_id)
    captions = dict(state.captions)
    for lang, texts in record.captions.items():
        ld = state.lang(lang)
        extra = {
            row: rest
            for row, clips in ld.base_extra.items()
            if (rest := tuple(c for c in clips if c != clip_id))
        }
        keep_rows = []
        clip_ids = []
        for i, clips in enumerate(ld.clip_ids):
            rest = tuple(c for c in clips if c != clip_id)
            if rest:
                keep_rows.append(i)
                clip_ids.append(rest)
        ld = LangDelta(
            tuple(ld.texts[i] for i in keep_rows),
            ld.vectors[keep_rows],
            tuple(clip_ids),
            extra,
            ld.dead_rows,
        )
        touched = {r for t in set(texts) if (r := _base_row(base, lang, t)) is not None}
        captions[lang] = _with_dead_rows(ld, base, lang, touched, tomb)
    return replace(state, captions=captions)


def add_change(
    record: ClipRecord, vector: np.ndarray, caption_vectors: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The log entry of an add (vectors already float16-exact)."""
    return {
        "op": "add",
        "record": json.loads(record.to_json()),
        "audio": pack(vector[None]),
        "captions": {lang: pack(v) for lang, v in caption_vectors.items()},
    }


def replay(state: LiveState, base: Version, entries: list[dict[str, Any]], path: Path) -> LiveState:
    """Apply logged changes in order; a change that does not apply means the log and
    the version disagree: IndexCorrupt naming the line."""
    for entry in entries:
        where = f"{path}:{entry['seq'] + 1}"
        try:
            if entry["op"] == "add":
                obj = entry["record"]
                record = ClipRecord(obj["id"], obj["audio"], obj["captions"], obj.get("meta", {}))
                vector = unpack(entry["audio"], state.dim)[0]
                caps = {lang: unpack(v, state.dim) for lang, v in entry["captions"].items()}
                state = apply_add(state, base, record, vector, caps)
            elif entry["op"] == "delete":
                state = apply_delete(state, base, entry["id"])
            else:
                raise IndexCorrupt(f"{where}: unknown change {entry['op']!r}")
        except (ClipExists, UnknownClip, KeyError, ValueError, TypeError) as exc:
            raise IndexCorrupt(f"{where}: change does not apply to the index: {exc}") from exc
    return state
