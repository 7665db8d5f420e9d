"""A reader (and, for tests, a writer) of Qt binary resource files (.rcc), in pure Python
so that no Qt tool is needed. Layout, from qtbase src/tools/rcc/rcc.cpp (writeHeader,
writeDataStructure) and src/corelib/io/qresource.cpp, all integers big-endian:

  header   b"qres", version u32, tree offset u32, data offset u32, names offset u32,
           flags u32 (version >= 3 only)
  tree     one node per entry, node 0 the root directory, each
             name offset u32, flags u16, then
             directory: child count u32, first child node index u32
             file:      territory u16, language u16, data offset u32
           followed by last-modified u64 when version >= 2 (14 or 22 bytes a node)
  names    at names offset + name offset: length u16, hash u32, UTF-16BE characters
  data     at data offset + data offset: size u32, then the bytes; flag 0x01 means
           qCompress (u32 uncompressed size + zlib stream), 0x04 means a zstd frame
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"qres"
COMPRESSED = 0x01
DIRECTORY = 0x02
COMPRESSED_ZSTD = 0x04


class RccError(ValueError):
    """A malformed or unsupported .rcc file; the message names the file and the entry."""


@dataclass(frozen=True)
class _Header:
    version: int
    tree: int
    data: int
    names: int


def _header(blob: bytes, source: str) -> _Header:
    if blob[:4] != MAGIC:
        raise RccError(f"{source}: not a Qt resource file (magic {blob[:4]!r}, expected {MAGIC!r})")
    version, tree, data, names = struct.unpack_from(">IIII", blob, 4)
    if version not in (1, 2, 3):
        raise RccError(f"{source}: unsupported rcc format version {version}")
    return _Header(version, tree, data, names)


def _name(blob: bytes, head: _Header, offset: int) -> str:
    at = head.names + offset
    (length,) = struct.unpack_from(">H", blob, at)
    return blob[at + 6 : at + 6 + 2 * length].decode("utf-16-be")


def _payload(blob: bytes, head: _Header, offset: int, flags: int, source: str, path: str) -> bytes:
    at = head.data + offset
    (size,) = struct.unpack_from(">I", blob, at)
    raw = blob[at + 4 : at + 4 + size]
    if flags & COMPRESSED_ZSTD:
        return _zstd(raw, source, path)
    if flags & COMPRESSED:
        try:  # qCompress: a 4-byte expected size, then a zlib stream
            return zlib.decompress(raw[4:])
        except zlib.error as err:
            raise RccError(f"{source}: entry {path}: bad zlib data ({err})") from None
    return raw


def _zstd(raw: bytes, source: str, path: str) -> bytes:
    try:
        import zstandard  # optional: Qt 6's rcc may zstd-compress entries
    except ImportError:
        raise RccError(
            f"{source}: entry {path} is zstd-compressed and the 'zstandard' module is not installed"
        ) from None
    return zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 31)


def iter_rcc(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Yield (posix path inside the resource, content) for every file in `path`."""
    blob = Path(path).read_bytes()
    source = str(path)
    head = _header(blob, source)
    node_size = 14 if head.version == 1 else 22
    pending = [(0, "")]  # (node index, its path); node 0 is the unnamed root
    while pending:
        index, where = pending.pop()
        at = head.tree + index * node_size
        try:
            name_off, flags = struct.unpack_from(">IH", blob, at)
            name = "" if index == 0 else _name(blob, head, name_off)
            full = f"{where}/{name}" if where else name
            if flags & DIRECTORY:
                count, first = struct.unpack_from(">II", blob, at + 6)
                pending.extend((first + k, full) for k in range(count))
                continue
            (data_off,) = struct.unpack_from(">I", blob, at + 10)
            payload = _payload(blob, head, data_off, flags, source, full)
        except struct.error:
            raise RccError(
                f"{source}: tree node {index} points outside the file (truncated?)"
            ) from None
        yield full, payload


def write_rcc(path: str | Path, files: dict[str, bytes], compress: bool = True) -> None:
    """Write a version-2 .rcc holding `files` (posix path -> bytes), zlib-compressed when
    `compress`. Used by tests to build fixtures in the format iter_rcc reads."""
    tree: dict = {}
    for name, content in files.items():
        node = tree
        *dirs, leaf = name.split("/")
        for part in dirs:
            node = node.setdefault(part, {})
        node[leaf] = content
    names, data, nodes = bytearray(), bytearray(), []

    def add_name(name: str) -> int:
        offset = len(names)
        names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return offset

    # Breadth-first, so that each directory's children are consecutive nodes.
    queue: list[tuple[str, object]] = [("", tree)]
    nodes.append(None)
    slots = [0]
    while queue:
        (name, value), slot = queue.pop(0), slots.pop(0)
        name_off = add_name(name) if slot else 0
        if isinstance(value, dict):
            first = len(nodes)
            for child in sorted(value.items()):
                slots.append(len(nodes))
                nodes.append(None)
                queue.append(child)
            nodes[slot] = struct.pack(">IHII", name_off, DIRECTORY, len(value), first)
        else:
            raw = struct.pack(">I", len(value)) + zlib.compress(value) if compress else value
            nodes[slot] = struct.pack(
                ">IHHHI", name_off, COMPRESSED if compress else 0, 0, 0, len(data)
            )
            data.extend(struct.pack(">I", len(raw)) + raw)
    body = b"".join(n + struct.pack(">Q", 0) for n in nodes)
    tree_off = 20
    data_off = tree_off + len(body)
    names_off = data_off + len(data)
    Path(path).write_bytes(
        MAGIC + struct.pack(">IIII", 2, tree_off, data_off, names_off) + body + data + names
    )
