"""`atri corpus import-csv`: AudioCaps- or Clotho-style caption CSVs, plus one translated
CSV per language with the same rows, into a manifest (manifest.md).

AudioCaps: columns audiocap_id, youtube_id, start_time, caption; one row per caption,
a clip is (youtube_id, start_time), caption order j is by audiocap_id.
Clotho: columns file_name, caption_1 ... caption_N; one row per clip.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import defaultdict
from pathlib import Path

from atri.training.data.manifest import ID_PATTERN, ClipRecord, ManifestError, write_manifest
from atri.training.languages import LANGS

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"}
COLUMNS = {
    "audiocaps": ("audiocap_id", "youtube_id", "start_time", "caption"),
    "clotho": ("file_name", "caption_1"),
}


class CsvImportError(ValueError):
    """Bad CSV input; the message names the file, the row and the problem."""


def clip_id(name: str) -> str:
    """A manifest id for an original name: the name itself when it fits manifest.md's
    pattern, else a slug plus a short hash (Clotho names hold spaces and commas,
    YouTube ids may start with '-')."""
    if ID_PATTERN.fullmatch(name):
        return name
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")[:100] or "clip"
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise CsvImportError(
                    f"{path}: missing column(s) {missing}; found {reader.fieldnames}"
                )
            return list(reader)
    except FileNotFoundError as exc:
        raise CsvImportError(f"{path}: CSV not found") from exc


def index_audio(audio_dir: Path) -> dict[str, Path]:
    """File stem and file name -> path, for every audio file below audio_dir."""
    if not audio_dir.is_dir():
        raise CsvImportError(f"{audio_dir}: audio directory not found")
    found: dict[str, Path] = {}
    for path in sorted(audio_dir.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            found.setdefault(path.name, path)
            found.setdefault(path.stem, path)
    return found


def _caption_columns(rows: list[dict[str, str]]) -> list[str]:
    cols = [c for c in rows[0] if re.fullmatch(r"caption_\d+", c)] if rows else []
    return sorted(cols, key=lambda c: int(c.split("_")[1]))


def group_clotho(path: Path, rows: list[dict[str, str]]) -> dict[str, list[str]]:
    cols = _caption_columns(rows)
    clips: dict[str, list[str]] = {}
    for i, row in enumerate(rows, start=2):  # row 1 is the header
        name = row["file_name"]
        texts = [row[c].strip() for c in cols]
        if name in clips:
            raise CsvImportError(f"{path}:{i}: file_name {name!r} appears twice")
        if not all(texts):
            raise CsvImportError(f"{path}:{i}: empty caption for {name!r}")
        clips[name] = texts
    return clips


def group_audiocaps(path: Path, rows: list[dict[str, str]]) -> dict[str, list[str]]:
    by_clip: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i, row in enumerate(rows, start=2):
        try:
            cap_id = int(row["audiocap_id"])
            start = float(row["start_time"])
        except ValueError as exc:
            raise CsvImportError(f"{path}:{i}: bad audiocap_id or start_time ({exc})") from exc
        if not row["caption"].strip():
            raise CsvImportError(f"{path}:{i}: empty caption")
        by_clip[f"{row['youtube_id']}_{start:g}"].append((cap_id, row["caption"].strip()))
    return {key: [t for _, t in sorted(caps)] for key, caps in by_clip.items()}


def check_aligned(fmt: str, base: Path, rows: list, other: Path, other_rows: list) -> None:
    """Translated CSVs must hold the same rows in the same order as the English one."""
    keys = ("audiocap_id", "youtube_id") if fmt == "audiocaps" else ("file_name",)
    if len(rows) != len(other_rows):
        raise CsvImportError(f"{other}: {len(other_rows)} rows, but {base} has {len(rows)}")
    for i, (a, b) in enumerate(zip(rows, other_rows, strict=True), start=2):
        for key in keys:
            if a[key] != b[key]:
                raise CsvImportError(
                    f"{other}:{i}: {key}={b[key]!r} does not line up with {base}:{i} "
                    f"({key}={a[key]!r})"
                )


def find_audio(fmt: str, key: str, audio: dict[str, Path], where: str) -> Path:
    if fmt == "clotho":
        candidates = [key]
    else:
        yid, start = key.rsplit("_", 1)
        candidates = [key, f"Y{key}", yid, f"Y{yid}", f"{yid}_{float(start):.3f}"]
    for name in candidates:
        if name in audio:
            return audio[name]
    raise CsvImportError(f"{where}: no audio file for {key!r} (looked for {candidates})")


def import_csv(
    fmt: str, csv_path: Path, audio_dir: Path, translations: dict[str, Path], out: Path
) -> list[ClipRecord]:
    if fmt not in COLUMNS:
        raise CsvImportError(f"unknown format {fmt!r}; expected one of {list(COLUMNS)}")
    for lang in translations:
        if lang not in LANGS or lang == "eng":
            raise CsvImportError(f"--translation {lang}=...: language must be one of {LANGS[1:]}")
    group = group_audiocaps if fmt == "audiocaps" else group_clotho
    rows = read_rows(csv_path, COLUMNS[fmt])
    per_lang = {"eng": group(csv_path, rows)}
    for lang, path in translations.items():
        other_rows = read_rows(path, COLUMNS[fmt])
        check_aligned(fmt, csv_path, rows, path, other_rows)
        per_lang[lang] = group(path, other_rows)
    audio = index_audio(audio_dir)
    records, ids = [], {}
    for key in per_lang["eng"]:
        path = find_audio(fmt, key, audio, str(csv_path))
        cid = clip_id(key)
        if cid in ids:
            raise CsvImportError(
                f"{csv_path}: clips {ids[cid]!r} and {key!r} map to one id {cid!r}"
            )
        ids[cid] = key
        rel = os.path.relpath(path.resolve(), out.resolve().parent)
        meta = {"source": fmt, "original_name": key}
        captions = {lang: per_lang[lang][key] for lang in per_lang}
        records.append(ClipRecord(id=cid, audio=rel, captions=captions, meta=meta))
    try:
        write_manifest(out, records)
    except ManifestError as exc:
        raise CsvImportError(str(exc)) from exc
    return records
