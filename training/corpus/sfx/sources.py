"""What the builder needs to know about a source file beyond its audio: read through
table.py (concept or exclusion per file), packages.toml (licence, attribution) and the
lexicon (which concepts exist, which are instruments)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from atri.training.corpus.sfx import lexicon
from atri.training.corpus.sfx.packages import PACKAGES
from atri.training.corpus.sfx.table import TABLES_DIR, Source, match_packages

INSTRUMENT_GROUP = "instruments"

__all__ = ["TABLES_DIR", "Source", "captions_digest", "is_instrument", "package_licence",
           "read_sources", "source_key", "sources_digest"]
# What the captions are written from: the sfx lexicon and the demo grammar (mel- clips).
_CAPTION_SOURCES = ("sfx/lexicon.py", "sfx/grammar.py", "sfx/lexicon_data/*.json",
                    "captions*.py", "lexicon.json")


def source_key(source: Source) -> str:
    """package/relpath: unique over the tree, and the order every step sorts by."""
    return f"{source.package}/{source.relpath}"


def read_sources(root: Path, table_dir: Path) -> tuple[list[Source], list[Source]]:
    """(included, excluded) sources of the packages that have a table in `table_dir`, in
    key order. A concept the lexicon does not know, or a package without a licence
    entry, is an error naming the file."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no extracted package tree here")
    packages = sorted(p.stem for p in Path(table_dir).glob("*.tsv"))
    if not packages:
        raise FileNotFoundError(f"{table_dir}: no <package>.tsv tables")
    included, excluded = [], []
    for source in sorted(match_packages(packages, root, table_dir).sources, key=source_key):
        if source.package not in PACKAGES:
            raise ValueError(f"{source_key(source)}: package {source.package!r} has no entry "
                             "in packages.toml (licence and attribution unknown)")
        if source.excluded is not None:
            excluded.append(source)
        elif source.concept not in lexicon.CONCEPTS:
            raise ValueError(f"{source_key(source)}: concept {source.concept!r} is not in the "
                             f"lexicon (table {table_dir / (source.package + '.tsv')})")
        else:
            included.append(source)
    return included, excluded


def package_licence(source: Source) -> tuple[str, str]:
    """(SPDX licence, attribution line) of one source file."""
    package = PACKAGES[source.package]
    licence = package.licence_for(source.relpath)
    attribution = package.attribution
    if licence.holders != package.holders:  # a file with its own holders says so
        attribution += f" This sound: (c) {licence.holders}, {licence.spdx}."
    return licence.spdx, attribution


def is_instrument(concept: str) -> bool:
    return lexicon.CONCEPTS[concept].group == INSTRUMENT_GROUP


def sources_digest(included: Iterable[Source], excluded: Iterable[Source], table_dir: Path) -> str:
    """SHA-256 over the tables and the mapped tree (paths, sizes, concepts, attributes,
    exclusions): the part of the stamp that says the inputs did not change."""
    digest = hashlib.sha256()
    for table in sorted(Path(table_dir).glob("*.tsv")):
        digest.update(table.name.encode() + b"\0" + table.read_bytes() + b"\0")
    for source in sorted([*included, *excluded], key=source_key):
        row = [source_key(source), Path(source.path).stat().st_size, source.concept,
               sorted(dict(source.attrs).items()), source.excluded]
        digest.update(json.dumps(row).encode() + b"\n")
    return digest.hexdigest()


def captions_digest() -> str:
    """SHA-256 over the code and word lists captions come from: a corpus captioned by an
    older lexicon is not taken for finished."""
    corpus = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for pattern in _CAPTION_SOURCES:
        for path in sorted(corpus.glob(pattern)):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
