"""Consistency checks of an index directory, for crash tests and `atri index validate`:
every problem found, as a readable line; an empty list means the index is sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atri.index import layout, live
from atri.index.errors import IndexStoreError
from atri.index.version import CaptionIndex, Version


def _check_version(version: Version) -> list[str]:
    problems = []
    where = version.path
    n, dim = len(version.ids), version.dim
    if len(version.position) != n:
        problems.append(f"{where}/ids.txt: duplicate ids")
    if version.vectors.shape != (n, dim):
        problems.append(
            f"{where}/vectors.npy: shape {version.vectors.shape}, expected ({n}, {dim})"
        )
    if version.index.ntotal != n:
        problems.append(f"{where}/audio.faiss: ntotal {version.index.ntotal}, expected {n}")
    if version.index.d != dim:
        problems.append(f"{where}/audio.faiss: dimension {version.index.d}, meta.json says {dim}")
    if version.meta.get("n_clips") != n:
        problems.append(f"{where}/meta.json: n_clips {version.meta.get('n_clips')}, ids {n}")
    if version.meta.get("metric") != "ip":
        problems.append(f"{where}/meta.json: metric {version.meta.get('metric')!r}, expected 'ip'")
    if len(version.records) != n:
        problems.append(f"{where}/records.jsonl: {len(version.records)} records for {n} ids")
    else:
        for i, record in enumerate(version.iter_records()):
            if record.id != version.ids[i]:
                problems.append(
                    f"{where}/records.jsonl:{i + 1}: id {record.id!r}, ids.txt has "
                    f"{version.ids[i]!r}"
                )
                break
    added = [i for i in version.overlay.added if i not in version.position]
    if added or len(set(version.overlay.added)) != len(version.overlay.added):
        problems.append(f"{where}/overlay.json: added ids not in the version, or repeated")
    if version.overlay.deleted & set(version.position):
        problems.append(f"{where}/overlay.json: deleted ids still in the version")
    for lang, caps in version.captions.items():
        problems += _check_captions(version, lang, caps)
        if len(problems) > 50:
            break
    return problems


def _check_captions(version: Version, lang: str, caps: CaptionIndex) -> list[str]:
    """One language's caption files against each other, the clips and meta.json."""
    problems = []
    name = f"{version.path}/captions/{lang}"
    c, dim = len(caps), version.dim
    if caps.vectors.shape != (c, dim):
        problems.append(f"{name}.npy: shape {caps.vectors.shape}, expected ({c}, {dim})")
    if caps.index.ntotal != c:
        problems.append(f"{name}.faiss: ntotal {caps.index.ntotal}, expected {c}")
    seen: set[str] = set()
    labels = 0
    for row, obj in enumerate(caps.table):
        unknown = [i for i in obj["clip_ids"] if i not in version.position]
        labels += bool(obj.get("vocabulary"))
        # only a vocabulary label may have no clip
        if unknown or not (obj["clip_ids"] or obj.get("vocabulary")):
            problems.append(f"{name}.jsonl:{row + 1}: clip ids {unknown or '[]'} not in the index")
        if obj["text"] in seen:
            problems.append(f"{name}.jsonl:{row + 1}: caption repeated")
        seen.add(obj["text"])
        if len(problems) > 50:
            return problems
    expected = version.meta.get("vocabulary", {}).get("labels", {}).get(lang, 0)
    if labels != expected:
        problems.append(
            f"{name}.jsonl: {labels} vocabulary labels, meta.json's vocabulary has {expected}"
        )
    hashes = np.asarray(caps._hashes)
    if not np.all(hashes[1:] >= hashes[:-1]):
        problems.append(f"{name}.hash.npy: not sorted")
    return problems


def validate(root: str | Path) -> list[str]:
    """Problems of the index at `root`: CURRENT, the current version's files against
    each other and meta.json, and whether live.log parses and applies to it."""
    root = Path(root)
    try:
        number = layout.require_current(root)
        version = Version(layout.version_dir(root, number), number)
    except IndexStoreError as exc:
        return [str(exc)]
    try:
        problems = _check_version(version)
        log_path = root / layout.LIVE_LOG
        try:
            contents = live.read_log(log_path)
            if contents.base is not None and contents.base > number:
                problems.append(
                    f"{log_path}: changes for version {contents.base} > CURRENT {number}"
                )
            elif contents.base == number:
                live.replay(live.LiveState(version.dim), version, contents.entries, log_path)
        except IndexStoreError as exc:
            problems.append(str(exc))
        return problems
    finally:
        version.close()
