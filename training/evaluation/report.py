"""Rendering of an evaluation: `report.md` tables shaped like ATRI's Tables 1-3, the
rank-consistency cases of its Table 5, and the t-SNE plot of its Appendix A.

Everything here is a pure function of arrays and of the metrics dict of
`metrics.evaluate_embeddings`; writing files (atomically) is the caller's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RECALL_COLUMNS = ("R@1", "R@5", "R@10", "mAP@10")
RANK_COLUMNS = ("medR", "meanR")
# One marker per language (ATRI App. A draws each language with its own marker);
# languages beyond these eight cycle through them.
TEXT_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "h")
AUDIO_MARKER = "*"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def recall_table(metrics: Mapping[str, Any]) -> list[str]:
    """ATRI Table 1: per language and their average, T2A then A2T R@1/R@5/R@10/mAP@10."""
    header = ["lang"] + [f"{d} {c}" for d in ("T2A", "A2T") for c in RECALL_COLUMNS]
    rows = [
        [lang] + [_fmt(metrics[d][lang][c]) for d in ("t2a", "a2t") for c in RECALL_COLUMNS]
        for lang in [*metrics["languages"], "avg"]
    ]
    return _table(header, rows)


def rank_stats_table(metrics: Mapping[str, Any]) -> list[str]:
    """Median and mean rank of the first relevant item, with the number of queries."""
    header = ["lang"] + [f"{d} {c}" for d in ("T2A", "A2T") for c in (*RANK_COLUMNS, "queries")]
    queries = metrics["n_queries"]
    rows = []
    for lang in [*metrics["languages"], "avg"]:
        row = [lang]
        for d in ("t2a", "a2t"):
            row += [_fmt(metrics[d][lang][c]) for c in RANK_COLUMNS]
            row.append(str(queries[d][lang]) if lang in queries[d] else "")
        rows.append(row)
    return _table(header, rows)


def multi_relevant_lines(metrics: Mapping[str, Any]) -> list[str]:
    """How many T2A queries had several relevant clips (metrics.md asks the evaluator to
    say): a caption string on several clips is one query with all of them relevant."""
    multi = metrics["n_queries"].get("t2a_multi_relevant")
    if multi is None:  # a metrics.json written before the rule
        return []
    counts = ", ".join(f"{lang} {n}" for lang, n in multi.items())
    return [
        "T2A queries with several relevant clips (one caption string on several clips is "
        f"one query, all of them relevant): {counts}.",
        "",
    ]


def gap_dis_table(metrics: Mapping[str, Any]) -> list[str]:
    """ATRI Table 2: Gap and Dis of each language against English, and their average."""
    langs = [lang for lang in metrics["gap"] if lang != "avg"] + ["avg"]
    rows = [[lang, _fmt(metrics["gap"][lang], 3), _fmt(metrics["dis"][lang], 3)] for lang in langs]
    return _table(["lang", "Gap", "Dis"], rows)


def mrv_table(metrics: Mapping[str, Any]) -> list[str]:
    """ATRI Table 3: MRV per direction, as a variance (ATRI) and as a std (CCRK)."""
    queries = metrics["n_queries"]
    rows = [
        [
            d.upper(),
            _fmt(metrics["mrv_var"][d]),
            _fmt(metrics["mrv_std"][d]),
            str(queries[f"mrv_{d}"]),
        ]
        for d in ("t2a", "a2t")
    ]
    return _table(["direction", "MRV (variance)", "MRV (std)", "queries"], rows)


@dataclass(frozen=True)
class RankCase:
    """One query slot (clip, caption index) and the T2A rank of its clip when the
    caption in each language is the query (ATRI Table 5)."""

    label: str
    clip_id: str
    caption_index: int
    caption: str
    ranks: dict[str, int]


def select_cases(ranks: Mapping[str, np.ndarray]) -> list[tuple[str, int, int]]:
    """The least and the most consistent query slots across languages, as
    (label, clip index, caption index).

    ranks[lang] (N, C): T2A rank of clip i under caption j, NaN where absent. Only slots
    present in every language compete. Least consistent: largest population variance
    of the ranks, ties to the worse mean rank. Most consistent: smallest variance, ties
    to the WORSE mean rank too, so that a model ranking many captions first everywhere
    shows its most consistent hard case rather than any of its easy ones. Remaining
    ties go to manifest order.
    """
    stacked = np.stack([np.asarray(r, dtype=np.float64) for r in ranks.values()])  # (L, N, C)
    complete = np.isfinite(stacked).all(axis=0)  # (N, C)
    if not complete.any():
        return []
    slots = np.argwhere(complete)  # (M, 2), manifest order
    values = stacked[:, complete]  # (L, M)
    var, mean = values.var(axis=0), values.mean(axis=0)  # (M,)
    order = np.arange(len(var))
    least = int(np.lexsort((order, -mean, -var))[0])
    most = int(np.lexsort((order, -mean, var))[0])
    picks = [("least consistent", least)] + ([("most consistent", most)] if most != least else [])
    return [(label, int(slots[m, 0]), int(slots[m, 1])) for label, m in picks]


def rank_cases(
    ranks: Mapping[str, np.ndarray],
    ids: Sequence[str],
    captions: Mapping[str, Sequence[Sequence[str]]],
    chosen: Sequence[tuple[str, int, int]],
) -> list[RankCase]:
    """RankCase rows for chosen (label, clip index, caption index) slots. The caption
    shown is the English one if the clip has it, else the first language's."""
    cases = []
    for label, i, j in chosen:
        shown = next(
            (captions[lang][i][j] for lang in ("eng", *ranks) if lang in captions
             and j < len(captions[lang][i])),
            "",
        )
        case_ranks = {
            lang: int(r[i, j]) for lang, r in ranks.items() if np.isfinite(r[i, j])
        }
        cases.append(RankCase(label, ids[i], j, shown, case_ranks))
    return cases


def rank_case_table(cases: Sequence[RankCase], langs: Sequence[str]) -> list[str]:
    """ATRI Table 5: one column per case, one row per language, then variance and std."""
    if not cases:
        return ["No caption slot is present in every language."]
    header = ["lang"] + [f"case {n}: {c.clip_id} #{c.caption_index}" for n, c in
                         enumerate(cases, start=1)]
    rows = [[lang] + [str(c.ranks[lang]) if lang in c.ranks else "–" for c in cases]
            for lang in langs]
    for name, fn in (("variance", np.var), ("std", np.std)):
        rows.append([name] + [_fmt(float(fn(list(c.ranks.values())))) for c in cases])
    lines = _table(header, rows)
    lines.append("")
    lines += [f"- case {n} ({c.label}): “{c.caption}”" for n, c in enumerate(cases, start=1)]
    return lines


def render_report(
    metrics: Mapping[str, Any], cases: Sequence[RankCase], tsne_file: str | None = "tsne.png"
) -> str:
    """report.md from a full metrics.json dict (provenance included): a header naming
    what was evaluated, then ATRI's Tables 1, 2, 3 and 5, then the appendices."""
    lines = [
        *_header(metrics),
        "## Retrieval (ATRI Table 1)",
        "",
        *recall_table(metrics),
        "",
        "### Ranks of the first relevant item",
        "",
        *rank_stats_table(metrics),
        "",
        *multi_relevant_lines(metrics),
        "## Embedding-space consistency against English (ATRI Table 2)",
        "",
    ]
    if len(metrics["gap"]) > 1:
        lines += gap_dis_table(metrics)
    else:
        lines.append("Needs English and at least one other language.")
    lines += [
        "",
        "## Rank consistency (ATRI Table 3)",
        "",
        *mrv_table(metrics),
        "",
        "## Rank of the right clip per query language (ATRI Table 5)",
        "",
        "T2A rank of the clip under its caption in each language; 1 = retrieved first "
        "(ATRI's Table 5 appears to count from 0).",
        "",
        *rank_case_table(cases, metrics["languages"]),
        *_appendices(tsne_file),
    ]
    return "\n".join(lines) + "\n"


def _header(metrics: Mapping[str, Any]) -> list[str]:
    """The title and what was evaluated: checkpoint, manifest, clips, code version."""
    prov = metrics["provenance"]
    commit = prov["commit"] or "unknown"
    return [
        "# Evaluation report",
        "",
        f"- checkpoint: `{metrics['checkpoint']}`",
        f"- manifest: `{metrics['manifest']}` (sha256 `{prov['manifest_sha256']}`)",
        f"- clips: {metrics['n_clips']}; languages: {', '.join(metrics['languages'])}",
        f"- code: commit `{commit}`" + (" (uncommitted changes)" if prov["dirty"] else ""),
        "",
        "Recall and mAP in percent; ranks are 1-based. Definitions: docs/evaluation.md.",
        "",
    ]


def _appendices(tsne_file: str | None) -> list[str]:
    """The t-SNE plot, when there is one."""
    if not tsne_file:
        return []
    return ["", "## Embedding space (ATRI Appendix A)", "", f"![t-SNE]({tsne_file})"]


def tsne_points(
    audio: np.ndarray,
    text: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray],
    n_clips: int = 50,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """The vectors of ATRI Appendix A: up to `n_clips` random clips whose caption slot
    j is present in every language (the first such j), each with its audio and its L
    parallel captions. Returns points (P, D), clip position (P,) in 0..n-1, kind (P,)
    (-1 audio, k the k-th language), and the chosen (clip index, caption index)."""
    langs = list(text)
    complete = np.logical_and.reduce([np.asarray(present[lang], bool) for lang in langs])
    eligible = np.flatnonzero(complete.any(axis=1))  # (N',)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(eligible, size=min(n_clips, len(eligible)), replace=False))
    chosen = [(int(i), int(np.argmax(complete[i]))) for i in picked]
    points, clip, kind = [], [], []
    for pos, (i, j) in enumerate(chosen):
        points.append(audio[i])
        clip.append(pos)
        kind.append(-1)
        for k, lang in enumerate(langs):
            points.append(text[lang][i, j])
            clip.append(pos)
            kind.append(k)
    return np.asarray(points), np.asarray(clip), np.asarray(kind), chosen


def tsne_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """(P, D) points laid out in 2-D by t-SNE (cosine distance, PCA init), (P, 2)."""
    from sklearn.manifold import TSNE

    n = len(points)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    perplexity = min(30.0, (n - 1) / 3)
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine"
    ).fit_transform(points.astype(np.float64))


def plot_tsne(
    points: np.ndarray,
    clip: np.ndarray,
    kind: np.ndarray,
    langs: Sequence[str],
    path: str | Path,
    seed: int = 0,
    title: str = "",
) -> None:
    """t-SNE (scikit-learn) of the points to 2-D, a colour per clip and a marker per
    language (a star for the audio), saved as PNG to `path` (the exact name given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = tsne_2d(points, seed)  # (P, 2)
    n_clips = int(clip.max()) + 1
    palette = [c for name in ("tab20", "tab20b", "tab20c")
               for c in matplotlib.colormaps[name].colors]
    colours = [palette[c % len(palette)] for c in range(n_clips)]
    fig, ax = plt.subplots(figsize=(9, 8), dpi=110)
    try:
        for k in range(-1, len(langs)):
            sel = kind == k
            audio = k == -1
            ax.scatter(
                xy[sel, 0], xy[sel, 1],
                c=[colours[c] for c in clip[sel]],
                marker=AUDIO_MARKER if audio else TEXT_MARKERS[k % len(TEXT_MARKERS)],
                s=140 if audio else 36,
                edgecolors="black" if audio else "none",
                linewidths=0.6,
                label="audio" if audio else langs[k],
            )
        legend = ax.legend(loc="best", fontsize=8, title="marker", markerscale=0.9)
        for handle in legend.legend_handles:
            handle.set_color("grey")
        ax.set_title(title or f"t-SNE of {n_clips} clips: audio and caption in {len(langs)} "
                     "languages (colour = clip)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
