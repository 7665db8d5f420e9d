"""OpenTTD's sound bank (.cat, as OpenSFX ships it), read as OpenTTD's sound_file.cpp
(OpenBankFile) reads it, all integers little-endian:

  table    one (offset u32, size u32) pair per sound; the first offset, with bit 31
           (the "new format" flag) cleared, is where the table ends, so count = offset / 8
  entry    at offset (bit 31 cleared): name length u8, the name (NUL-terminated), then
           a RIFF WAV of `size` bytes

OpenSFX's names are the sound's title in quotes followed by its credits and licence, e.g.
'"Ship horn". Original "ship2_bergen.aif" by Leon Milo. Edited by Wuzzy. License: ...'.
Each sound is written as <index:02d>_<slug of title>.wav, and titles.tsv beside them keeps
index, file, title and the full credits line (the per-sound attribution)."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from atri.training.fileio import atomic_write_bytes, atomic_write_text

_NEW_FORMAT = 1 << 31


class CatError(ValueError):
    """A malformed .cat file; the message names the file and the entry."""


@dataclass(frozen=True)
class CatSound:
    index: int
    title: str
    credits: str  # the whole name string: title, authors, licence
    wav: bytes

    @property
    def filename(self) -> str:
        return f"{self.index:02d}_{slug(self.title)}.wav"


def slug(title: str) -> str:
    """'Lumber mill: Chainsaw' -> 'lumber_mill_chainsaw' (stable: tables match on it)."""
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "untitled"


def _title(credits: str) -> str:
    match = re.match(r'\s*"([^"]*)"', credits)
    return match.group(1) if match else credits.split(".")[0]


def iter_cat(path: str | Path) -> Iterator[CatSound]:
    blob = Path(path).read_bytes()
    if len(blob) < 8:
        raise CatError(f"{path}: too short for a sound table ({len(blob)} bytes)")
    count = (struct.unpack_from("<I", blob, 0)[0] & ~_NEW_FORMAT) // 8
    for index in range(count):
        offset, size = struct.unpack_from("<II", blob, 8 * index)
        offset &= ~_NEW_FORMAT
        if offset >= len(blob):
            raise CatError(
                f"{path}: entry {index}: offset {offset} beyond the file ({len(blob)} bytes)"
            )
        name_len = blob[offset]
        credits = blob[offset + 1 : offset + 1 + name_len].rstrip(b"\0").decode("utf-8", "replace")
        wav = blob[offset + 1 + name_len : offset + 1 + name_len + size]
        if wav[:4] != b"RIFF" or len(wav) != size:
            raise CatError(f"{path}: entry {index} ({credits[:40]!r}): not a complete RIFF WAV")
        yield CatSound(index, _title(credits), credits, wav)


def unpack_cat(path: str | Path, out: Path) -> int:
    """Write every sound of `path` into `out`; return how many."""
    out.mkdir(parents=True, exist_ok=True)
    rows = ["index\tfile\ttitle\tcredits"]
    n = 0
    for sound in iter_cat(path):
        atomic_write_bytes(out / sound.filename, sound.wav)
        rows.append(f"{sound.index}\t{sound.filename}\t{sound.title}\t{sound.credits}")
        n += 1
    atomic_write_text(out / "titles.tsv", "\n".join(rows) + "\n")
    return n


def write_cat(path: str | Path, sounds: list[tuple[str, bytes]]) -> None:
    """Write a new-format .cat of (credits, wav bytes), for test fixtures."""
    table, body = bytearray(), bytearray()
    start = 8 * len(sounds)
    for credits, wav in sounds:
        name = credits.encode("utf-8") + b"\0"
        table += struct.pack("<II", (start + len(body)) | _NEW_FORMAT, len(wav))
        body += bytes([len(name)]) + name + wav
    Path(path).write_bytes(bytes(table + body))
