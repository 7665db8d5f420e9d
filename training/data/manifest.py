"""Corpus manifests (shared spec manifest.md, v1): a strict JSONL reader and an atomic
writer. Every problem is reported with the file, the line and the field; nothing is
skipped silently."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from atri.training.fileio import atomic_write_text
from atri.training.languages import LANGS

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
FIELDS = {"id", "audio", "captions", "meta"}


class ManifestError(ValueError):
    """A manifest that does not follow manifest.md; the message names file and line."""


@dataclass
class ClipRecord:
    """One line of a manifest: one audio clip and its parallel captions."""

    id: str
    audio: str
    captions: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, str | int | float | bool] = field(default_factory=dict)

    def n_captions(self) -> int:
        """Captions per language (lists are parallel, so equal for every language)."""
        return len(next(iter(self.captions.values()), []))

    def to_json(self) -> str:
        obj: dict = {"id": self.id, "audio": self.audio, "captions": self.captions}
        if self.meta:
            obj["meta"] = self.meta
        return json.dumps(obj, ensure_ascii=False)


@dataclass
class Manifest:
    """The records of one manifest file, with audio paths resolved against its folder."""

    path: Path
    records: list[ClipRecord]

    def audio_path(self, record: ClipRecord) -> Path:
        audio = Path(record.audio)
        return audio if audio.is_absolute() else self.path.parent / audio

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)


def _parse_line(obj: object, where: str) -> ClipRecord:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(FIELDS)}")
    for name in ("id", "audio", "captions"):
        if name not in obj:
            raise ManifestError(f"{where}: missing field {name!r}")
    clip_id, audio, captions = obj["id"], obj["audio"], obj["captions"]
    if not isinstance(clip_id, str) or not ID_PATTERN.fullmatch(clip_id):
        raise ManifestError(
            f"{where}: field 'id' = {clip_id!r} must match {ID_PATTERN.pattern}"
        )
    if not isinstance(audio, str) or not audio.strip():
        raise ManifestError(f"{where}: field 'audio' must be a non-empty path string")
    if not isinstance(captions, dict):
        raise ManifestError(f"{where}: field 'captions' must be an object lang -> [captions]")
    counts = {}
    for lang, texts in captions.items():
        if lang not in LANGS:
            raise ManifestError(
                f"{where}: captions: unknown language code {lang!r}; expected one of {list(LANGS)}"
            )
        if not isinstance(texts, list) or not texts:
            raise ManifestError(f"{where}: captions.{lang} must be a non-empty list of strings")
        for j, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ManifestError(f"{where}: captions.{lang}[{j}] must be a non-empty string")
        counts[lang] = len(texts)
    if len(set(counts.values())) > 1:
        raise ManifestError(
            f"{where}: captions: unequal caption counts across languages {counts} "
            "(lists are parallel: captions[L][j] translates captions['eng'][j])"
        )
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise ManifestError(f"{where}: field 'meta' must be an object")
    for key, value in meta.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ManifestError(
                f"{where}: meta.{key} must be a string, number or boolean, got {value!r}"
            )
    return ClipRecord(id=clip_id, audio=audio, captions=captions, meta=meta)


def read_manifest(path: str | os.PathLike, check_audio: bool = True) -> Manifest:
    """Read and validate a manifest; raise ManifestError naming file and line on any problem.

    `check_audio` also requires every audio file to exist (off for tools that only need
    the captions of a manifest whose audio lives elsewhere).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: manifest not found") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc})") from exc
    lines = text.split("\n")
    while lines and not lines[-1].strip():  # a trailing newline is not an empty record
        lines.pop()
    records: list[ClipRecord] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        where = f"{path}:{lineno}"
        if not line.strip():
            raise ManifestError(f"{where}: empty line (one JSON object per line)")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: bad JSON: {exc.msg} at column {exc.colno}") from exc
        record = _parse_line(obj, where)
        if record.id in first_line:
            raise ManifestError(
                f"{where}: duplicate id {record.id!r} (first on line {first_line[record.id]})"
            )
        first_line[record.id] = lineno
        records.append(record)
    manifest = Manifest(path=path, records=records)
    if check_audio:
        for lineno, record in enumerate(records, start=1):
            if not manifest.audio_path(record).is_file():
                raise ManifestError(
                    f"{path}:{lineno}: audio file not found: {manifest.audio_path(record)}"
                )
    return manifest


def require_captions(manifest: Manifest, langs: Sequence[str] | None = None) -> None:
    """Training and evaluation need captions: reject clips without any, naming them."""
    missing = [r.id for r in manifest.records if not r.captions]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ManifestError(f"{manifest.path}: {len(missing)} clip(s) have no captions: {shown}")
    if langs:
        absent = [lang for lang in langs if not any(lang in r.captions for r in manifest)]
        if absent:
            raise ManifestError(f"{manifest.path}: no clip has captions in {absent}")


def write_manifest(path: str | os.PathLike, records: Iterable[ClipRecord]) -> None:
    """Write records as a manifest, atomically. Records are validated as the reader would."""
    lines = []
    seen: set[str] = set()
    for i, record in enumerate(records, start=1):
        line = record.to_json()
        _parse_line(json.loads(line), f"{path}: record {i}")
        if record.id in seen:
            raise ManifestError(f"{path}: record {i}: duplicate id {record.id!r}")
        seen.add(record.id)
        lines.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in lines))
