"""The Debian packages the real-recordings corpus is built from: packages.toml (one table
per package, keyed by its Debian name; its header says what each field holds), read into
frozen entries and checked when this module is imported.

Never add the packages reserved for evaluation (../shared/spec/corpus.md): sonic-pi-samples,
sound-theme-freedesktop, lomiri-sounds, tuxpaint*, desktop UI sound themes."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

PACKAGES_FILE = Path(__file__).resolve().parent / "packages.toml"

# How a container file is unpacked (extract.py has one function per kind).
CONTAINER_KINDS = ("zip", "c4group", "rcc", "opensfx-cat")

# What counts as a clip: every such file under ROOT/<package> must match a table row.
# .wv (WavPack, teeworlds) is kept as is; ffmpeg decodes it.
AUDIO_EXTENSIONS = (".ogg", ".wav", ".flac", ".mp3", ".wv", ".opus")


def is_audio(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


class PackageTableError(ValueError):
    """A bad packages.toml; the message names the file, the package and the field."""


@dataclass(frozen=True)
class Container:
    """Files matching `pattern` (a glob over deb paths) are unpacked into `<path>.d/`.
    `members` restricts a zip to members under that prefix."""

    kind: str
    pattern: str
    members: str = ""


@dataclass(frozen=True)
class Licence:
    """The licence of the files matching `pattern` (glob over the path relative to the
    package's extracted root), with their holders as the copyright file names them."""

    pattern: str
    spdx: str
    holders: str


@dataclass(frozen=True)
class Package:
    name: str
    licence: str  # SPDX-ish id of the package's sounds by default
    holders: str  # copyright holders, as the copyright file names them
    attribution: str  # the line a corpus user must reproduce
    tools: tuple[str, ...] = ()  # debs needed only to unpack (never part of the corpus)
    containers: tuple[Container, ...] = ()
    licences: tuple[Licence, ...] = field(default=())

    @property
    def debs(self) -> tuple[str, ...]:
        return (self.name, *self.tools)

    def licence_for(self, relpath: str) -> Licence:
        """The licence of one file (posix path relative to ROOT/<package>)."""
        for entry in self.licences:
            if fnmatchcase(relpath, entry.pattern):
                return entry
        return Licence("*", self.licence, self.holders)


def read_packages(path: Path = PACKAGES_FILE) -> dict[str, Package]:
    """Every package of `path`, in file order. Raises PackageTableError naming the file
    and, for a bad entry, the package and the field."""
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PackageTableError(f"{path}: {e}") from e
    return {name: _package(name, table, f"{path}: [{name}]") for name, table in tables.items()}


def _package(name: str, table: Any, where: str) -> Package:
    table = dict(_table(table, where))
    tools = tuple(_text(tool, at) for tool, at in _items(table, "tools", where))
    containers = tuple(_container(entry, at) for entry, at in _items(table, "containers", where))
    licences = tuple(
        Licence(**_texts(entry, at, ("pattern", "spdx", "holders")))
        for entry, at in _items(table, "licences", where)
    )
    texts = _texts(table, where, ("licence", "holders", "attribution"))
    return Package(name, **texts, tools=tools, containers=containers, licences=licences)


def _container(entry: Any, where: str) -> Container:
    container = Container(**_texts(entry, where, ("kind", "pattern"), ("members",)))
    if container.kind not in CONTAINER_KINDS:
        kinds = ", ".join(CONTAINER_KINDS)
        raise PackageTableError(f"{where} kind: {container.kind!r} is not one of {kinds}")
    return container


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PackageTableError(f"{where}: expected a table, got {value!r}")
    return value


def _items(table: dict[str, Any], key: str, where: str) -> list[tuple[Any, str]]:
    """The entries of the list under `key` (none when it is absent), each with its place
    for error messages; the key is removed from `table`."""
    value = table.pop(key, [])
    if not isinstance(value, list):
        raise PackageTableError(f"{where} {key}: expected a list, got {value!r}")
    return [(entry, f"{where} {key}[{i}]") for i, entry in enumerate(value)]


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PackageTableError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _texts(
    value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, str]:
    """A table of non-empty strings with each `required` key and no key but those and
    the `optional` ones."""
    table = _table(value, where)
    for key in table:
        if key not in required + optional:
            raise PackageTableError(f"{where}: unknown field {key!r}")
    for key in required:
        if key not in table:
            raise PackageTableError(f"{where} {key}: missing")
    return {key: _text(text, f"{where} {key}") for key, text in table.items()}


PACKAGES: dict[str, Package] = read_packages()


def get_package(name: str) -> Package:
    try:
        return PACKAGES[name]
    except KeyError:
        raise KeyError(
            f"unknown sfx package {name!r}; known: {', '.join(sorted(PACKAGES))}"
        ) from None
