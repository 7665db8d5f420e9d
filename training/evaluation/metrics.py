"""Retrieval and cross-lingual consistency metrics (shared spec metrics.md).

Rank convention: the rank of a candidate is 1 + the number of OTHER gallery candidates
with a strictly higher score, so ties never depend on sort or manifest order and are
resolved in the query's favour. All retrieval metrics derive from one quantity,
`higher_counts`: for each relevant item of a query, the number of non-relevant gallery
items scoring strictly above it. With h_1 <= h_2 <= ... those counts of a query's n
relevant items,

    best rank   = 1 + h_1                       (R@k, medR, meanR)
    AP@k        = sum_{m : m + h_m <= k} m / (m + h_m)  /  min(n, k)

which is ML-CLAP's mAP@10 (WavCaps evaluation code) whenever scores have no ties. Under
ties, relevant items sit ahead of the non-relevant items they tie with (the rank
convention above) and among themselves in any order (AP does not depend on it).

Embeddings are L2-normalised; scores are inner products. Scores are computed in blocks
of queries, so memory stays near `max_elements` booleans whatever the number of clips.

Sources: ML-CLAP (Yan et al., 2024); ATRI (Yin et al., 2025) for Dis; Liang et al.
(NeurIPS 2022) for Gap; Nie et al. (KDD 2024) and its CCRK code for MRV.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from atri.training.evaluation.caption_queries import Queries, t2a_queries

RECALL_KS = (1, 5, 10)
MAP_K = 10
MAX_ELEMENTS = 1 << 24  # booleans per comparison block (16 MB)


def higher_counts(
    scores: np.ndarray,
    relevant: np.ndarray,
    valid: np.ndarray,
    gallery: np.ndarray | None = None,
    sort: bool = True,
) -> np.ndarray:
    """For each (query q, relevant item r): the number of gallery items that are not
    relevant to q and score strictly above relevant[q, r].

    scores (Q, G); relevant (Q, R) gallery indices; valid (Q, R) bool, False for padding;
    gallery (G,) bool, None = all candidates. Returns (Q, R) float, each row sorted
    ascending unless `sort` is False (then aligned with `relevant`), inf for padding and
    for relevant items outside the gallery.
    """
    q, g = scores.shape
    gallery = np.ones(g, dtype=bool) if gallery is None else gallery
    valid = valid & gallery[relevant]  # (Q, R)
    rel_scores = np.take_along_axis(scores, relevant, axis=1)  # (Q, R)
    candidate = np.repeat(gallery[None, :], q, axis=0)  # (Q, G)
    rows = np.broadcast_to(np.arange(q)[:, None], relevant.shape)  # (Q, R)
    candidate[rows[valid], relevant[valid]] = False
    higher = (scores[:, None, :] > rel_scores[:, :, None]) & candidate[:, None, :]  # (Q, R, G)
    counts = higher.sum(axis=2).astype(np.float64)  # (Q, R)
    counts[~valid] = np.inf
    return np.sort(counts, axis=1) if sort else counts


def t2a_counts(
    audio: np.ndarray, text: np.ndarray, queries: Queries, max_elements: int = MAX_ELEMENTS
) -> np.ndarray:
    """higher_counts of every (query, relevant clip) pair of `queries` (caption_queries.py)
    against all N clips. audio (N, D), text (N, C, D) -> (P,) float, aligned with
    queries.clips (unsorted)."""
    n, dim = audio.shape
    flat_text = text.reshape(-1, dim)  # (N*C, D)
    out = np.empty(len(queries.clips))
    for members, pairs in queries.blocks(max(1, max_elements // max(1, n))):
        scores = flat_text[queries.first[members]] @ audio.T  # (b, N)
        relevant = queries.clips[pairs]  # (b, r)
        valid = np.ones(relevant.shape, dtype=bool)
        out[pairs] = higher_counts(scores, relevant, valid, sort=False)
    return out


def t2a_slot_ranks(queries: Queries, counts: np.ndarray) -> np.ndarray:
    """Rank of clip i under the query of slot (i, j), counting only the clips NOT relevant
    to that query above it (MRV's R_{i,j,l}: another carrier of the caption ranking first
    is no inconsistency). -> (N, C) float, NaN where absent."""
    ranks = np.full(queries.pair.shape, np.nan)
    present = queries.pair >= 0
    ranks[present] = counts[queries.pair[present]] + 1
    return ranks


def t2a_metrics(queries: Queries, counts: np.ndarray) -> dict[str, float | None]:
    """retrieval_metrics of T2A, one row per query (its relevant clips' counts)."""
    best = np.empty(len(queries))
    precision = np.empty(len(queries))
    for members, pairs in queries.blocks(MAX_ELEMENTS):
        ordered = np.sort(counts[pairs], axis=1)  # (b, r)
        best[members] = ordered[:, 0] + 1
        precision[members] = average_precision_at_k(ordered)
    return _summary(best, precision)


def t2a_ranks(
    audio: np.ndarray,
    text: np.ndarray,
    present: np.ndarray,
    max_elements: int = MAX_ELEMENTS,
    captions: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """Rank of clip i among all N clips when caption j of clip i is the query (other
    clips carrying the same caption string, when `captions` is given, not counted).
    audio (N, D), text (N, C, D), present (N, C) bool -> (N, C) float, NaN where absent."""
    queries = t2a_queries(present, captions)
    return t2a_slot_ranks(queries, t2a_counts(audio, text, queries, max_elements))


def a2t_counts(
    audio: np.ndarray, text: np.ndarray, present: np.ndarray, max_elements: int = MAX_ELEMENTS
) -> np.ndarray:
    """higher_counts with each clip as the query against all present captions of the
    language, its own present captions relevant. audio (N, D), text (N, C, D), present
    (N, C) bool -> (N, C) float, rows sorted, all inf for a clip with no caption."""
    n, c, dim = text.shape
    flat_text = text.reshape(n * c, dim)  # (N*C, D)
    gallery = present.reshape(n * c)  # (N*C,)
    out = np.full((n, c), np.inf)
    step = max(1, max_elements // max(1, c * n * c))
    for start in range(0, n, step):
        stop = min(n, start + step)
        scores = audio[start:stop] @ flat_text.T  # (b, N*C)
        relevant = np.arange(start * c, stop * c).reshape(stop - start, c)  # (b, C)
        out[start:stop] = higher_counts(scores, relevant, present[start:stop], gallery)
    return out


def average_precision_at_k(counts: np.ndarray, k: int = MAP_K) -> np.ndarray:
    """AP@k per query from sorted higher_counts (Q, R): the m-th relevant item sits at
    position m + h_m; AP = sum over those within the top k of m / position, divided by
    min(number of relevant items, k). Returns (Q,)."""
    m = np.arange(1, counts.shape[1] + 1)[None, :]  # (1, R)
    position = m + counts  # (Q, R)
    precision = np.where(position <= k, m / position, 0.0)  # (Q, R)
    n_relevant = np.isfinite(counts).sum(axis=1)  # (Q,)
    return precision.sum(axis=1) / np.minimum(n_relevant, k)


def retrieval_metrics(counts: np.ndarray) -> dict[str, float | None]:
    """R@1, R@5, R@10 and mAP@10 in percent, medR and meanR, from sorted higher_counts
    (Q, R). Queries with no relevant item (a row of inf) are skipped."""
    counts = counts[np.isfinite(counts[:, 0])]
    return _summary(counts[:, 0] + 1, average_precision_at_k(counts))


def _summary(best: np.ndarray, precision: np.ndarray) -> dict[str, float | None]:
    """The metrics of queries with best ranks `best` (Q,) and AP@10 `precision` (Q,)."""
    names = [f"R@{k}" for k in RECALL_KS] + [f"mAP@{MAP_K}", "medR", "meanR"]
    if best.shape[0] == 0:
        return dict.fromkeys(names, None)
    out: dict[str, float | None] = {f"R@{k}": 100.0 * float(np.mean(best <= k)) for k in RECALL_KS}
    out[f"mAP@{MAP_K}"] = 100.0 * float(np.mean(precision))
    out["medR"] = float(np.median(best))
    out["meanR"] = float(np.mean(best))
    return out


def modality_gap(reference: np.ndarray, other: np.ndarray) -> float:
    """Gap_l = || mean_i(t_i^eng) - mean_i(t_i^l) ||_2 (after Liang et al., 2022).
    reference, other (M, D): paired captions."""
    diff = reference.astype(np.float64).mean(axis=0) - other.astype(np.float64).mean(axis=0)
    return float(np.linalg.norm(diff))


def mean_distance(reference: np.ndarray, other: np.ndarray) -> float:
    """Dis_l = mean_i || t_i^eng - t_i^l ||_2 over paired captions (our reading of ATRI).
    reference, other (M, D)."""
    diff = reference.astype(np.float64) - other.astype(np.float64)  # (M, D)
    return float(np.linalg.norm(diff, axis=1).mean())


def mean_rank_variance(ranks: np.ndarray) -> tuple[float, float]:
    """MRV (Nie et al., 2024). ranks (M, L): the rank of the same instance queried in L
    languages. Returns (mean over instances of the population std over languages — CCRK's
    np.std, mean of the population variances — what ATRI's Table 3 reports)."""
    ranks = ranks.astype(np.float64)
    return float(ranks.std(axis=1).mean()), float(ranks.var(axis=1).mean())


def duplicate_captions(captions: Sequence[Sequence[str]]) -> int:
    """Number of distinct caption strings (exact match) found on two or more different
    clips of one language; captions[i] lists clip i's captions. Such captions make
    relevance ambiguous, so evaluation reports them."""
    clips_of: dict[str, set[int]] = {}
    for clip, clip_captions in enumerate(captions):
        for caption in clip_captions:
            clips_of.setdefault(caption, set()).add(clip)
    return sum(1 for clips in clips_of.values() if len(clips) > 1)


def _presence(
    text: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None, lang: str
) -> np.ndarray:
    """(N, C) bool presence of language `lang`; a (N,) mask covers all of a clip's captions."""
    n, c = text[lang].shape[:2]
    if present is None or lang not in present:
        return np.ones((n, c), dtype=bool)
    mask = np.asarray(present[lang], dtype=bool)
    return np.broadcast_to(mask[:, None], (n, c)) if mask.ndim == 1 else mask


def _average(per_lang: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """Unweighted mean over languages of each metric, ignoring undefined values."""
    names = next(iter(per_lang.values())).keys() if per_lang else []
    out: dict[str, float | None] = {}
    for name in names:
        values = [m[name] for m in per_lang.values() if m[name] is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def _gap_dis(
    texts: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], reference: str
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Gap_l and Dis_l for each language but `reference`, over the captions present in
    both, plus their unweighted "avg"."""
    gap: dict[str, float | None] = {}
    dis: dict[str, float | None] = {}
    for lang in texts if reference in texts else []:
        paired = masks[reference] & masks[lang]  # (N, C)
        if lang == reference or not paired.any():
            continue
        ref, other = texts[reference][paired], texts[lang][paired]  # (M, D)
        gap[lang], dis[lang] = modality_gap(ref, other), mean_distance(ref, other)
    gap["avg"] = float(np.mean(list(gap.values()))) if gap else None
    dis["avg"] = float(np.mean(list(dis.values()))) if dis else None
    return gap, dis


def _mrv_ranks(
    audio: np.ndarray,
    texts: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    t2a_rank: Mapping[str, np.ndarray],
    a2t: Mapping[str, np.ndarray],
    max_elements: int,
) -> dict[str, np.ndarray]:
    """The (M, L) rank matrices MRV needs, over the slots present in every language: T2A
    ranks of those captions; A2T best ranks of clips with such a slot, against galleries
    of those slots only (reusing the per-language counts when nothing is missing)."""
    complete = np.logical_and.reduce(list(masks.values()))  # (N, C)
    queried = complete.any(axis=1)  # (N,)
    best = []
    for lang, counts in a2t.items():
        if not np.array_equal(masks[lang], complete):
            counts = a2t_counts(audio, texts[lang], complete, max_elements)
        best.append(counts[queried, 0] + 1)  # (N',)
    return {
        "t2a": np.stack([r[complete] for r in t2a_rank.values()], axis=1),  # (M, L)
        "a2t": np.stack(best, axis=1),  # (N', L)
    }


def _check_inputs(
    audio: np.ndarray, texts: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
) -> None:
    """Non-finite present embeddings would silently rank first: refuse them."""
    if not np.isfinite(audio).all():
        raise ValueError("audio embeddings contain non-finite values")
    for lang, emb in texts.items():
        if emb.ndim != 3 or emb.shape[0] != audio.shape[0] or emb.shape[2] != audio.shape[1]:
            raise ValueError(f"{lang}: text shape {emb.shape} does not fit audio {audio.shape}")
        if not np.isfinite(emb[masks[lang]]).all():
            raise ValueError(f"{lang}: present text embeddings contain non-finite values")


def evaluate_embeddings(
    audio: np.ndarray,
    text: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray] | None = None,
    langs: Sequence[str] | None = None,
    captions: Mapping[str, Sequence[Sequence[str]]] | None = None,
    reference: str = "eng",
    max_elements: int = MAX_ELEMENTS,
) -> dict[str, Any]:
    """All metrics of metrics.md, shaped as metrics.json (cli.md) minus its provenance.

    audio (N, D); text[lang] (N, C, D), captions[i, j] of clip i in that language;
    present[lang] (N, C) or (N,) bool, missing = all present (absent slots may hold any
    value, NaN included); langs defaults to text's keys; captions[lang][i] the caption
    strings of clip i. Per language: T2A queries are its distinct caption strings (its
    present slots when `captions` lacks the language), each against all N clips with
    every clip carrying it relevant (caption_queries.py); A2T queries are the clips with
    a caption in it against its present captions. Gap and Dis use the captions present
    in both `reference` and the language. MRV uses the (clip, caption index) slots
    present in every language: for T2A the rank of the clip under its slot's query with
    the other clips relevant to that query not counted; for A2T ranks against galleries
    restricted to those slots, so that every language is ranked against the same
    candidates.
    """
    langs = list(text) if langs is None else list(langs)
    if not langs:
        raise ValueError("no language to evaluate")
    audio = np.asarray(audio)
    texts = {lang: np.asarray(text[lang]) for lang in langs}
    masks = {lang: _presence(texts, present, lang) for lang in langs}
    _check_inputs(audio, texts, masks)

    strings = captions or {}
    queries = {lang: t2a_queries(masks[lang], strings.get(lang)) for lang in langs}
    t2a_count = {x: t2a_counts(audio, texts[x], queries[x], max_elements) for x in langs}
    t2a_rank = {lang: t2a_slot_ranks(queries[lang], t2a_count[lang]) for lang in langs}
    a2t = {lang: a2t_counts(audio, texts[lang], masks[lang], max_elements) for lang in langs}
    t2a = {lang: t2a_metrics(queries[lang], t2a_count[lang]) for lang in langs}
    a2t_metrics = {lang: retrieval_metrics(counts) for lang, counts in a2t.items()}
    gap, dis = _gap_dis(texts, masks, reference)
    mrv_ranks = _mrv_ranks(audio, texts, masks, t2a_rank, a2t, max_elements)
    mrv = {d: mean_rank_variance(r) if r.size else (None, None) for d, r in mrv_ranks.items()}

    out: dict[str, Any] = {
        "n_clips": int(audio.shape[0]),
        "languages": langs,
        "t2a": {**t2a, "avg": _average(t2a)},
        "a2t": {**a2t_metrics, "avg": _average(a2t_metrics)},
        "gap": gap,
        "dis": dis,
        "mrv_std": {d: v[0] for d, v in mrv.items()},
        "mrv_var": {d: v[1] for d, v in mrv.items()},
        "n_queries": _n_queries(queries, masks, mrv_ranks),
    }
    if captions is not None:
        out["duplicate_captions"] = {
            lang: duplicate_captions(captions[lang]) for lang in langs if lang in captions
        }
    return out


def _n_queries(
    queries: Mapping[str, Queries],
    masks: Mapping[str, np.ndarray],
    mrv_ranks: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """Queries behind each number: T2A a language's distinct captions (and how many of
    them have several relevant clips), A2T the clips with a caption in it, MRV the slots
    present in every language."""
    return {
        "t2a": {lang: len(q) for lang, q in queries.items()},
        "t2a_multi_relevant": {lang: q.n_multi_relevant() for lang, q in queries.items()},
        "a2t": {lang: int(mask.any(axis=1).sum()) for lang, mask in masks.items()},
        "mrv_t2a": int(mrv_ranks["t2a"].shape[0]),
        "mrv_a2t": int(mrv_ranks["a2t"].shape[0]),
    }


def validation_score(metrics: Mapping[str, Any]) -> float:
    """Checkpoint selection score (metrics.md study protocol): the mean of T2A R@1 and
    A2T R@1, each averaged over the languages, in percent."""
    t2a, a2t = metrics["t2a"]["avg"]["R@1"], metrics["a2t"]["avg"]["R@1"]
    if t2a is None or a2t is None:
        raise ValueError("validation score undefined: no query in any language")
    return (t2a + a2t) / 2
