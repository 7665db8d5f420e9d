"""T2A with repeated caption strings (metrics.md): one query per distinct string of a
language, all the clips carrying it relevant; against naive loops, and unchanged numbers
when no string repeats."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from atri.training.evaluation.caption_queries import t2a_queries
from atri.training.evaluation.metrics import evaluate_embeddings, t2a_ranks

LANGS = ["eng", "fra", "jpn"]


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    return sum(float(x[d]) * float(y[d]) for d in range(len(x)))


def _naive_language(audio, table, strings, present):
    """{string: (best rank, AP@10)} and {(i, j): rank of clip i under its string, other
    carriers not counted}, by the definitions, one query at a time."""
    n, c = present.shape
    slots = [(i, j) for i in range(n) for j in range(c) if present[i, j]]
    carriers: dict[str, set[int]] = {}
    for i, j in slots:
        carriers.setdefault(strings[i][j], set()).add(i)
    per_query, per_slot = {}, {}
    for text, relevant in carriers.items():
        scores = {g: _dot(table[text], audio[g]) for g in range(n)}
        above = {
            r: sum(1 for g in range(n) if g not in relevant and scores[g] > scores[r])
            for r in relevant
        }
        best = 1 + min(above.values())
        # relevant items ahead of the non-relevant ones they tie with (the rank convention)
        order = sorted(scores, key=lambda g: (-scores[g], g not in relevant))
        hits, ap = 0, 0.0
        for pos, g in enumerate(order[:10], start=1):
            hits += g in relevant
            ap += hits / pos if g in relevant else 0.0
        per_query[text] = (best, ap / min(len(relevant), 10))
        per_slot.update({(i, j): 1 + above[i] for i, j in slots if strings[i][j] == text})
    return per_query, per_slot


def _summary(results) -> dict:
    ranks = [r for r, _ in results]
    out = {f"R@{k}": 100 * sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
    out["mAP@10"] = 100 * sum(ap for _, ap in results) / len(results)
    out.update(medR=float(statistics.median(ranks)), meanR=sum(ranks) / len(ranks))
    return out


def _repeated_case(n: int, c: int, d: int, vocab: int, ties: bool, seed: int):
    """Captions drawn from `vocab` strings per language (so they repeat across and within
    clips), each string embedded once; some clips lack French or Japanese."""
    rng = np.random.default_rng(seed)
    if ties:  # small integers: exactly equal scores, exact in any summation order
        draw = lambda *shape: rng.integers(-1, 2, size=shape).astype(np.float64)  # noqa: E731
    else:
        draw = lambda *shape: rng.normal(size=shape)  # noqa: E731
    audio = draw(n, d)
    tables, strings, text, present = {}, {}, {}, {}
    for lang in LANGS:
        tables[lang] = {f"{lang}-{v}": draw(d) for v in range(vocab)}
        kept = np.ones(n, bool) if lang == "eng" else rng.random(n) > 0.3
        strings[lang] = [
            [f"{lang}-{v}" for v in rng.integers(0, vocab, size=c)] if kept[i] else []
            for i in range(n)
        ]
        present[lang] = np.repeat(kept[:, None], c, axis=1)
        text[lang] = np.full((n, c, d), np.nan)
        for i in np.flatnonzero(kept):
            text[lang][i] = [tables[lang][s] for s in strings[lang][i]]
    return audio, text, present, strings, tables


@pytest.mark.parametrize(
    ("n", "c", "d", "vocab", "ties"),
    [(5, 1, 3, 3, True), (8, 3, 2, 6, True), (12, 5, 4, 9, True), (10, 2, 5, 4, False),
     (14, 4, 3, 30, False)],
)  # fmt: skip
def test_repeated_captions_match_naive_loops(n, c, d, vocab, ties) -> None:
    audio, text, present, strings, tables = _repeated_case(n, c, d, vocab, ties, seed=n + c)
    got = evaluate_embeddings(audio, text, present, LANGS, strings, max_elements=7)
    slot_ranks = {}
    for lang in LANGS:
        per_query, slot_ranks[lang] = _naive_language(
            audio, tables[lang], strings[lang], present[lang]
        )
        assert got["t2a"][lang] == pytest.approx(_summary(list(per_query.values())))
        assert got["n_queries"]["t2a"][lang] == len(per_query)
        multi = sum(
            len({i for i in range(n) for s in strings[lang][i] if s == t}) > 1 for t in per_query
        )
        assert got["n_queries"]["t2a_multi_relevant"][lang] == multi
        ranks = t2a_ranks(audio, text[lang], present[lang], 5, strings[lang])
        assert {slot: ranks[slot] for slot in slot_ranks[lang]} == slot_ranks[lang]
    complete = [s for s in slot_ranks["eng"] if all(s in slot_ranks[x] for x in LANGS)]
    rows = [[slot_ranks[x][s] for x in LANGS] for s in complete]
    assert got["mrv_var"]["t2a"] == pytest.approx(
        sum(statistics.pvariance(r) for r in rows) / len(rows)
    )
    assert got["mrv_std"]["t2a"] == pytest.approx(
        sum(statistics.pstdev(r) for r in rows) / len(rows)
    )
    assert sum(got["n_queries"]["t2a_multi_relevant"].values()) > 0  # the case has repeats


@pytest.mark.parametrize(
    ("n", "c", "ties", "seed"), [(9, 3, True, 0), (20, 5, False, 1), (7, 1, False, 2)]
)
def test_unique_captions_give_exactly_the_slot_numbers(n, c, ties, seed) -> None:
    # strings made unique: every number equals the caption-free result
    audio, text, present, strings, _ = _repeated_case(n, c, 4, 3 * n * c, ties, seed)
    unique = {
        x: [[f"{x} {i} {j}" for j in range(len(s))] for i, s in enumerate(strings[x])]
        for x in LANGS
    }
    with_strings = evaluate_embeddings(audio, text, present, LANGS, unique, max_elements=11)
    assert with_strings.pop("duplicate_captions") == dict.fromkeys(LANGS, 0)
    assert with_strings == evaluate_embeddings(audio, text, present, LANGS)


def test_queries_layout() -> None:
    present = np.array([[True, True], [True, False], [True, True]])
    q = t2a_queries(present, [["a", "b"], ["b"], ["a", "a"]])
    # queries in first-appearance order: "a" (slot 0), "b" (slot 1)
    assert q.first.tolist() == [0, 1]
    assert [q.clips[q.indptr[k] : q.indptr[k + 1]].tolist() for k in range(2)] == [[0, 2], [0, 1]]
    assert q.clips[q.pair[present]].tolist() == [0, 0, 1, 2, 2]  # each slot -> its own clip
    assert q.pair[1, 1] == -1 and q.n_multi_relevant() == 2
    assert q.relevance(3).tolist() == [[True, False, True], [True, True, False]]
    blocks = list(q.blocks(budget=2))
    assert all(pairs.size <= 2 for _, pairs in blocks)
