"""Metrics against hand-computed examples (ties included), naive loops and properties."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from atri.training.evaluation.metrics import (
    a2t_counts,
    average_precision_at_k,
    duplicate_captions,
    evaluate_embeddings,
    mean_distance,
    mean_rank_variance,
    modality_gap,
    retrieval_metrics,
    t2a_ranks,
    validation_score,
)

# Hand example: 3 clips, 2 captions each. Audio is the identity, so caption (i, j)'s
# vector IS its row of scores against clips 0, 1, 2 (exact in floating point).
AUDIO = np.eye(3)
ENG = np.array(
    [
        [[0.9, 0.5, 0.1], [0.5, 0.5, 0.7]],  # clip 0
        [[0.3, 0.5, 0.3], [0.8, 0.2, 0.9]],  # clip 1
        [[0.6, 0.1, 0.6], [0.2, 0.6, 0.6]],  # clip 2
    ]
)
# T2A rank of clip i for caption (i, j) = 1 + #{other clips strictly above}:
#   (0,0) 0.9 vs .5 .1 -> 1 | (0,1) 0.5 vs .5(tie, not counted) .7 -> 2
#   (1,0) 0.5 vs .3 .3 -> 1 | (1,1) 0.2 vs .8 .9 -> 3
#   (2,0) 0.6 vs .6(tie) .1 -> 1 | (2,1) 0.6 vs .2 .6(tie) -> 1
T2A_RANKS = [[1, 2], [1, 3], [1, 1]]
# R@1 4/6; mAP@10 = mean(1/r) = (1 + 1/2 + 1 + 1/3 + 1 + 1) / 6; medR median(1,1,1,1,2,3)=1.
T2A_EXPECTED = {
    "R@1": 100 * 4 / 6, "R@5": 100.0, "R@10": 100.0,
    "mAP@10": 100 * (4 + 1 / 2 + 1 / 3) / 6, "medR": 1.0, "meanR": 9 / 6,
}  # fmt: skip
# A2T, clip g queries column g of all six captions; h = #non-relevant strictly above.
#   clip 0: relevant .9 .5, others .3 .8 .6 .2 -> h = [0, 2]; best 1; AP = (1/1 + 2/4) / 2
#   clip 1: relevant .5 .2, others .5 .5 .1 .6 -> h = [1, 3] (ties at .5 not counted);
#           best 2; AP = (1/2 + 2/5) / 2
#   clip 2: relevant .6 .6 (tied), others .1 .7 .3 .9 -> h = [2, 2]; best 3;
#           AP = (1/3 + 2/4) / 2: tied relevant items take positions 3 and 4
A2T_COUNTS = [[0, 2], [1, 3], [2, 2]]
A2T_AP = [0.75, 0.45, 5 / 12]
A2T_EXPECTED = {
    "R@1": 100 / 3, "R@5": 100.0, "R@10": 100.0,
    "mAP@10": 100 * sum(A2T_AP) / 3, "medR": 2.0, "meanR": 2.0,
}  # fmt: skip
# French: as English except caption (1,1) = [.1 .2 .9]: its T2A rank is 2 instead of 3,
# and no clip's A2T best rank changes (but clip 0: others .3 .1 .6 .2 -> h = [0, 1]).
FRA = ENG.copy()
FRA[1, 1] = [0.1, 0.2, 0.9]


def test_hand_example_ranks_and_counts() -> None:
    present = np.ones((3, 2), dtype=bool)
    np.testing.assert_array_equal(t2a_ranks(AUDIO, ENG, present), T2A_RANKS)
    counts = a2t_counts(AUDIO, ENG, present)
    np.testing.assert_array_equal(counts, A2T_COUNTS)
    np.testing.assert_allclose(average_precision_at_k(counts), A2T_AP)


def test_hand_example_metrics() -> None:
    out = evaluate_embeddings(AUDIO, {"eng": ENG, "fra": FRA})
    assert out["t2a"]["eng"] == pytest.approx(T2A_EXPECTED)
    assert out["a2t"]["eng"] == pytest.approx(A2T_EXPECTED)
    # fra A2T: best ranks as eng, but clip 0's h = [0, 1] so its AP is (1/1 + 2/3) / 2.
    fra_a2t = {**A2T_EXPECTED, "mAP@10": 100 * (5 / 6 + A2T_AP[1] + A2T_AP[2]) / 3}
    assert out["a2t"]["fra"] == pytest.approx(fra_a2t)
    # fra T2A ranks [[1,2],[1,2],[1,1]]: R@1 4/6, mAP (4 + 1/2 + 1/2)/6, medR 1, meanR 8/6.
    fra = {"R@1": 100 * 4 / 6, "mAP@10": 100 * 5 / 6, "medR": 1.0, "meanR": 8 / 6}
    assert {k: out["t2a"]["fra"][k] for k in fra} == pytest.approx(fra)
    assert out["t2a"]["avg"]["meanR"] == pytest.approx((9 / 6 + 8 / 6) / 2)
    # Only slot (1,1) differs: ranks (3, 2) -> population std 0.5, variance 0.25, over 6 slots.
    assert out["mrv_std"] == pytest.approx({"t2a": 0.5 / 6, "a2t": 0.0})
    assert out["mrv_var"] == pytest.approx({"t2a": 0.25 / 6, "a2t": 0.0})
    # eng - fra is [.7, 0, 0] on one of 6 pairs: Dis = 0.7/6, Gap = ||[.7/6, 0, 0]|| = 0.7/6.
    assert out["dis"] == pytest.approx({"fra": 0.7 / 6, "avg": 0.7 / 6})
    assert out["gap"] == pytest.approx({"fra": 0.7 / 6, "avg": 0.7 / 6})
    assert validation_score(out) == pytest.approx((100 * 4 / 6 + 100 / 3) / 2)


def test_average_precision_cut_at_k() -> None:
    # Positions m + h_m = 1, 5, 11, 24: only the first two are in the top 10;
    # AP = (1/1 + 2/5) / min(4, 10) = 0.35. Twelve relevant at the top: 10 / min(12, 10) = 1.
    counts = np.array([[0, 3, 8, 20, np.inf] + [np.inf] * 7, [0.0] * 12])
    np.testing.assert_allclose(average_precision_at_k(counts), [0.35, 1.0])


def test_retrieval_metrics_skip_queries_without_relevant_items() -> None:
    out = retrieval_metrics(np.array([[0.0, 4.0], [np.inf, np.inf], [9.0, np.inf]]))
    # best ranks 1 and 10; AP (1 + 2/6)/2 and 1/10
    assert out == pytest.approx(
        {"R@1": 50.0, "R@5": 50.0, "R@10": 100.0, "mAP@10": 100 * (2 / 3 + 0.1) / 2,
         "medR": 5.5, "meanR": 5.5}
    )  # fmt: skip
    assert all(v is None for v in retrieval_metrics(np.full((2, 3), np.inf)).values())


def test_gap_and_distance_by_hand() -> None:
    ref, other = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])
    assert modality_gap(ref, other) == 0.0  # equal means
    assert mean_distance(ref, other) == pytest.approx(math.sqrt(2))


def test_mean_rank_variance_by_hand() -> None:
    # [1, 2, 3]: population variance 2/3, std sqrt(2/3); [4, 4, 4]: 0.
    std, var = mean_rank_variance(np.array([[1, 2, 3], [4, 4, 4]]))
    assert std == pytest.approx(math.sqrt(2 / 3) / 2)
    assert var == pytest.approx(1 / 3)


def test_duplicate_captions() -> None:
    # "a" on clips 0 and 1, "c" on clips 1 and 2; "b" once; "x" twice but on one clip.
    assert duplicate_captions([["a", "b"], ["a", "c"], ["c", "c"], ["x", "x"]]) == 2
    captions = {"eng": [["a", "b"], ["a", "c"], ["d", "e"]]}
    out = evaluate_embeddings(AUDIO, {"eng": ENG}, captions=captions)
    assert out["duplicate_captions"] == {"eng": 1}
    assert out["n_queries"]["t2a"] == {"eng": 5}  # "a" is one query
    assert out["n_queries"]["t2a_multi_relevant"] == {"eng": 1}


def test_present_slot_without_a_caption_string_is_refused() -> None:
    with pytest.raises(ValueError, match=r"slot \(1, 1\) is present"):
        evaluate_embeddings(AUDIO, {"eng": ENG}, captions={"eng": [["a", "b"], ["a"], ["c", "d"]]})


# ---- naive loops ------------------------------------------------------------------


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    return sum(float(x[d]) * float(y[d]) for d in range(len(x)))


def _naive_query(scores: dict, relevant: set) -> tuple[int, float]:
    """(best rank by the definition, AP@10 over a list sorted by score, relevant first)."""
    best = min(1 + sum(1 for g, s in scores.items() if g != r and s > scores[r]) for r in relevant)
    order = sorted(scores, key=lambda g: (-scores[g], g not in relevant))
    hits, ap = 0, 0.0
    for pos, g in enumerate(order[:10], start=1):
        if g in relevant:
            hits += 1
            ap += hits / pos
    return best, ap / min(len(relevant), 10)


def _summary(results: list[tuple[int, float]]) -> dict:
    ranks = [r for r, _ in results]
    out = {f"R@{k}": 100 * sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
    out["mAP@10"] = 100 * sum(ap for _, ap in results) / len(results)
    out.update(medR=float(statistics.median(ranks)), meanR=sum(ranks) / len(ranks))
    return out


def _naive_ranks(audio, text, slots, queries):
    """T2A {(i, j): (rank, AP)} and A2T {i: (best rank, AP)} against caption `slots`."""
    t2a = {
        (i, j): _naive_query({g: _dot(text[i, j], audio[g]) for g in range(len(audio))}, {i})
        for (i, j) in slots
    }
    a2t = {
        i: _naive_query(
            {s: _dot(audio[i], text[s]) for s in slots}, {s for s in slots if s[0] == i}
        )
        for i in queries
    }
    return t2a, a2t


def _naive_evaluate(audio, text, present, langs):
    n, c = present[langs[0]].shape
    out = {"t2a": {}, "a2t": {}, "gap": {}, "dis": {}}
    t2a_all, a2t_all = {}, {}
    for lang in langs:
        slots = [(i, j) for i in range(n) for j in range(c) if present[lang][i, j]]
        queries = sorted({i for i, _ in slots})
        t2a_all[lang], a2t_all[lang] = _naive_ranks(audio, text[lang], slots, queries)
        out["t2a"][lang] = _summary(list(t2a_all[lang].values()))
        out["a2t"][lang] = _summary(list(a2t_all[lang].values()))
        if lang != "eng":
            pairs = [(text["eng"][s], text[lang][s]) for s in slots if present["eng"][s]]
            mean_diff = sum(e - t for e, t in pairs) / len(pairs)
            out["gap"][lang] = math.sqrt(sum(float(x) ** 2 for x in mean_diff))
            out["dis"][lang] = sum(math.dist(e, t) for e, t in pairs) / len(pairs)
    full = [(i, j) for i in range(n) for j in range(c) if all(present[x][i, j] for x in langs)]
    queries = sorted({i for i, _ in full})
    rows_t2a = [[t2a_all[x][s][0] for x in langs] for s in full]
    a2t_full = {x: _naive_ranks(audio, text[x], full, queries)[1] for x in langs}
    rows_a2t = [[a2t_full[x][i][0] for x in langs] for i in queries]
    for name, fn in (("mrv_std", statistics.pstdev), ("mrv_var", statistics.pvariance)):
        out[name] = {
            "t2a": sum(fn(row) for row in rows_t2a) / len(rows_t2a),
            "a2t": sum(fn(row) for row in rows_a2t) / len(rows_a2t),
        }
    return out


def _random_case(n: int, c: int, d: int, langs: list[str], ties: bool, missing: bool, seed: int):
    rng = np.random.default_rng(seed)
    if ties:  # small integers: many exactly equal scores, exact in any summation order
        draw = lambda *shape: rng.integers(-1, 2, size=shape).astype(np.float64)  # noqa: E731
    else:
        draw = lambda *shape: rng.normal(size=shape)  # noqa: E731
    audio = draw(n, d)
    text = {lang: draw(n, c, d) for lang in langs}
    present = {lang: np.ones((n, c), dtype=bool) for lang in langs}
    if missing:  # drop whole languages of some clips, never English, never all of a clip
        for lang in langs[1:]:
            gone = rng.random(n) < 0.3
            present[lang][gone] = False
            text[lang][gone] = np.nan
    return audio, text, present


@pytest.mark.parametrize(
    ("n", "c", "d", "ties", "missing"),
    [(4, 1, 3, True, False), (7, 3, 2, True, True), (12, 5, 4, True, True),
     (9, 2, 5, False, False), (13, 12, 3, False, True)],
)  # fmt: skip
def test_evaluate_matches_naive_loops(n: int, c: int, d: int, ties: bool, missing: bool) -> None:
    langs = ["eng", "fra", "jpn"]
    audio, text, present = _random_case(n, c, d, langs, ties, missing, seed=n * c)
    got = evaluate_embeddings(audio, text, present, max_elements=50)  # several blocks
    expected = _naive_evaluate(audio, text, present, langs)
    for direction in ("t2a", "a2t"):
        for lang in langs:
            assert got[direction][lang] == pytest.approx(expected[direction][lang])
    for name in ("gap", "dis"):
        for lang in ("fra", "jpn"):
            assert got[name][lang] == pytest.approx(expected[name][lang])
    assert got["mrv_std"] == pytest.approx(expected["mrv_std"])
    assert got["mrv_var"] == pytest.approx(expected["mrv_var"])
    assert got["n_queries"]["t2a"] == {x: int(present[x].sum()) for x in langs}


def _wavcaps_a2t_map(audio: np.ndarray, text: np.ndarray) -> float:
    """ML-CLAP/WavCaps evaluation code's A2T mAP@10 (argsort positions), as loops."""
    n, c = text.shape[:2]
    flat = text.reshape(n * c, -1)
    ap = []
    for i in range(n):
        order = list(np.argsort(flat @ audio[i])[::-1])
        positions = sorted(order.index(i * c + j) + 1 for j in range(c))
        kept = [p for p in positions if p <= 10]
        ap.append(sum((m + 1) / p for m, p in enumerate(kept)) / min(c, 10))
    return 100 * sum(ap) / n


@pytest.mark.parametrize(("n", "c"), [(6, 1), (15, 5), (8, 11)])
def test_map_matches_mlclap_code_without_ties(n: int, c: int) -> None:
    rng = np.random.default_rng(n)
    audio, text = rng.normal(size=(n, 4)), rng.normal(size=(n, c, 4))
    counts = a2t_counts(audio, text, np.ones((n, c), dtype=bool))
    assert retrieval_metrics(counts)["mAP@10"] == pytest.approx(_wavcaps_a2t_map(audio, text))


# ---- properties ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_gap_never_exceeds_distance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref, other = rng.normal(size=(2, 20, 8))
    ref, other = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (ref, other))
    other = ref + (0.1 + seed) * other  # from nearly parallel to unrelated
    assert modality_gap(ref, other) <= mean_distance(ref, other) + 1e-12


def test_mrv_is_zero_when_languages_agree() -> None:
    rng = np.random.default_rng(0)
    audio, text = rng.normal(size=(10, 4)), rng.normal(size=(10, 3, 4))
    out = evaluate_embeddings(audio, {"eng": text, "fra": text.copy(), "deu": text.copy()})
    assert out["mrv_std"] == {"t2a": 0.0, "a2t": 0.0}
    assert out["mrv_var"] == {"t2a": 0.0, "a2t": 0.0}
    assert out["gap"]["avg"] == 0.0 and out["dis"]["avg"] == 0.0
    assert out["t2a"]["fra"] == out["t2a"]["eng"]


def test_missing_language_is_skipped() -> None:
    # Clip 2 has no French: French A2T has 2 queries, T2A 4; MRV uses clips 0 and 1 only.
    present = {"fra": np.array([True, True, False])}
    fra = FRA.copy()
    fra[2] = np.nan
    out = evaluate_embeddings(AUDIO, {"eng": ENG, "fra": fra}, present)
    assert out["n_queries"] == {
        "t2a": {"eng": 6, "fra": 4}, "t2a_multi_relevant": {"eng": 0, "fra": 0},
        "a2t": {"eng": 3, "fra": 2}, "mrv_t2a": 4, "mrv_a2t": 2,
    }  # fmt: skip
    # French T2A ranks of clips 0, 1 are unchanged (all 3 clips stay candidates): 1 2 1 2.
    assert out["t2a"]["fra"]["meanR"] == pytest.approx(1.5)
    # Dis over the 4 paired captions: 0.7 / 4.
    assert out["dis"]["fra"] == pytest.approx(0.7 / 4)
    # MRV T2A: slot (1,1) ranks (3, 2) among 4 slots -> variance 0.25 / 4.
    assert out["mrv_var"]["t2a"] == pytest.approx(0.25 / 4)


def test_blocks_do_not_change_results() -> None:
    audio, text, present = _random_case(11, 3, 4, ["eng", "spa"], True, True, seed=3)
    small = evaluate_embeddings(audio, text, present, max_elements=1)
    assert small == evaluate_embeddings(audio, text, present)


def test_non_finite_present_embeddings_are_refused() -> None:
    text = ENG.copy()
    text[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="eng: present text"):
        evaluate_embeddings(AUDIO, {"eng": text})
