"""The reviewed tables that say what each recording is: training/corpus/sfx/tables/<package>.tsv.

UTF-8, tab-separated, '#' starts a comment line, an optional header line `pattern ...`:

  pattern  concept  attrs  note

- pattern: a glob (fnmatch, case-sensitive; `*` and `**` both cross `/`) over the clip's
  posix path relative to ROOT/<package>, e.g. usr/share/games/0ad/*/audio/actor/fauna/cow_*.ogg
- concept: a concept id of the lexicon, or `-` for an excluded file
- attrs: `material=snow;distance=distant` or `-`
- note: free text; for an excluded row it starts with the reason, one of REASONS,
  optionally followed by `:` and free text

The first matching row wins. Every audio file under ROOT/<package> must match a row:
an unmatched file is an error naming it and the table, never a silent skip. Rows that
match no file are reported as warnings so that stale rows get noticed."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from atri.training.corpus.sfx.packages import is_audio

log = logging.getLogger(__name__)

TABLES_DIR = Path(__file__).resolve().parent / "tables"
REASONS = ("music", "speech", "ui", "unclear", "synthetic", "duplicate", "too_short")
EXCLUDED = "-"


class TableError(ValueError):
    """A bad table row or an unmatched file; the message names file:line:field or the file."""


@dataclass(frozen=True)
class Row:
    pattern: str
    concept: str | None  # None: excluded
    attrs: Mapping[str, str]
    reason: str | None  # set exactly when excluded
    note: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Source:
    """One audio file of a package and what its table says it is."""

    package: str
    relpath: str  # posix, relative to ROOT/<package>
    path: Path  # absolute
    concept: str | None  # None when excluded
    attrs: dict[str, str]
    excluded: str | None  # the reason (one of REASONS) when excluded, else None
    note: str


@dataclass
class TableMatch:
    sources: list[Source] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # rows that matched nothing


def vocabulary() -> tuple[Mapping[str, Any], Mapping[str, tuple[str, ...]]]:
    """(concepts by id, attribute values) the tables may use: the lexicon's."""
    from atri.training.corpus.sfx import lexicon  # loaded on first use: it reads 8 languages

    return lexicon.CONCEPTS, lexicon.ATTRIBUTE_VALUES


def _applies(concept: Any, attrs: Mapping[str, str], where: str) -> None:
    """A lexicon concept names the attributes its captions can say (and the materials);
    an attribute it cannot say would be silently lost, so it is an error here."""
    allowed = getattr(concept, "attributes", None)
    if allowed is None:
        return
    for key, value in attrs.items():
        if key not in allowed:
            raise TableError(f"{where}: attrs: {key!r} does not apply to {concept.id!r}")
        if key == "material" and value not in concept.materials:
            raise TableError(
                f"{where}: attrs: material={value!r} not allowed for {concept.id!r} "
                f"({', '.join(concept.materials)})"
            )


def _attrs(text: str, where: str, values: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    if text == EXCLUDED:
        return {}
    attrs: dict[str, str] = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in values:
            raise TableError(
                f"{where}: attrs: unknown attribute {key!r} (known: {', '.join(sorted(values))})"
            )
        if value not in values[key]:
            raise TableError(f"{where}: attrs: {key}={value!r} not one of {', '.join(values[key])}")
        attrs[key] = value
    return attrs


def _row(cells: list[str], where: str, concepts: Mapping[str, Any], values: Mapping) -> tuple:
    if len(cells) < 3 or len(cells) > 4:
        raise TableError(
            f"{where}: expected 3 or 4 tab-separated fields "
            f"(pattern concept attrs note), got {len(cells)}"
        )
    pattern, concept, attrs_text = (c.strip() for c in cells[:3])
    note = cells[3].strip() if len(cells) == 4 else ""
    if not pattern:
        raise TableError(f"{where}: pattern: empty")
    reason = None
    if concept == EXCLUDED:
        reason = note.split(":", 1)[0].strip()
        if reason not in REASONS:
            raise TableError(
                f"{where}: note: exclusion reason {reason!r} not one of {', '.join(REASONS)}"
            )
        if attrs_text != EXCLUDED:
            raise TableError(
                f"{where}: attrs: an excluded row has no attributes (got {attrs_text!r})"
            )
    elif concept not in concepts:
        raise TableError(f"{where}: concept: unknown concept id {concept!r}")
    attrs = _attrs(attrs_text, where, values)
    if reason is None:
        _applies(concepts[concept], attrs, where)
    return pattern, None if reason else concept, attrs, reason, note


def load_table(
    path: str | Path,
    concepts: Mapping[str, Any] | Iterable[str] | None = None,
    attribute_values: Mapping[str, tuple[str, ...]] | None = None,
) -> list[Row]:
    """Parse and validate one table (errors name file:line:field). `concepts` are ids, or
    the lexicon's Concept objects by id (then attributes are checked against each)."""
    path = Path(path)
    if concepts is None or attribute_values is None:
        known, values = vocabulary()
        concepts = known if concepts is None else concepts
        attribute_values = values if attribute_values is None else attribute_values
    concept_map = concepts if isinstance(concepts, Mapping) else dict.fromkeys(concepts)
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TableError(f"{path}: no such table") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#") or line.startswith("pattern\t"):
            continue
        where = f"{path}:{number}"
        pattern, concept, attrs, reason, note = _row(
            line.split("\t"), where, concept_map, attribute_values
        )
        rows.append(Row(pattern, concept, attrs, reason, note, str(path), number))
    return rows


def audio_files(tree: Path) -> list[str]:
    """Posix paths (relative to `tree`) of every audio file under it, sorted."""
    return sorted(
        p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file() and is_audio(p.name)
    )


def match_package(package: str, root: Path, tables_dir: Path = TABLES_DIR) -> TableMatch:
    """Map every audio file of ROOT/<package> through tables_dir/<package>.tsv."""
    table = tables_dir / f"{package}.tsv"
    rows = load_table(table)
    tree = root / package
    if not tree.is_dir():
        raise TableError(f"{tree}: package {package} is not extracted under {root}")
    used: set[int] = set()
    result, unmatched = TableMatch(), []
    for rel in audio_files(tree):
        row = next((r for r in rows if fnmatchcase(rel, r.pattern)), None)
        if row is None:
            unmatched.append(rel)
            continue
        used.add(row.line)
        result.sources.append(
            Source(
                package,
                rel,
                (tree / rel).resolve(),
                row.concept,
                dict(row.attrs),
                row.reason,
                row.note,
            )
        )
    if unmatched:
        shown = "\n  ".join(unmatched[:20]) + ("\n  ..." if len(unmatched) > 20 else "")
        raise TableError(
            f"{table}: {len(unmatched)} audio file(s) of {package} match no row:\n  {shown}"
        )
    result.warnings = [
        f"{r.where}: pattern {r.pattern!r} matched no file" for r in rows if r.line not in used
    ]
    for warning in result.warnings:
        log.warning("%s", warning)
    return result


def match_packages(
    packages: Iterable[str], root: Path, tables_dir: Path = TABLES_DIR
) -> TableMatch:
    """match_package over several packages, sources and warnings concatenated in order."""
    total = TableMatch()
    for package in packages:
        one = match_package(package, root, tables_dir)
        total.sources.extend(one.sources)
        total.warnings.extend(one.warnings)
    return total
