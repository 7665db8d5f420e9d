"""Statistics of a strategy study (shared spec metrics.md, study protocol): Welch's test
over seeds with its degrees of freedom, and a cluster bootstrap over test queries.

Test queries of the demo corpus are not independent: the 2 captions (x 8 languages) of
a clip describe one recording, the clips of a minimal-pair cluster differ in one
attribute, and clips of different clusters can share a melody. Resampling queries as if
independent makes intervals too narrow; `resampling_units` joins clips into units that
share neither a cluster nor a melody with any other unit, and `cluster_bootstrap`
resamples those units whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Welch:
    """Difference of two arms' means over seeds (a - b) with Welch's t test. `t`, `df`
    and the interval are None when either arm has zero variance over its seeds: a t
    from a standard deviation of 0 is not a statistic (metrics are discrete, so seeds
    can agree exactly)."""

    diff: float
    t: float | None
    df: float | None
    low: float | None
    high: float | None


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Welch:
    """Welch's unequal-variance t for mean(a) - mean(b), with the Welch-Satterthwaite
    degrees of freedom and the `confidence` interval of the difference."""
    a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a_) < 2 or len(b_) < 2:
        raise ValueError(
            f"Welch's test needs at least 2 seeds per arm, got {len(a_)} and {len(b_)}"
        )
    diff = float(a_.mean() - b_.mean())
    va, vb = a_.var(ddof=1) / len(a_), b_.var(ddof=1) / len(b_)  # squared standard errors
    if va == 0 or vb == 0:
        return Welch(diff, None, None, None, None)
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a_) - 1) + vb**2 / (len(b_) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    return Welch(diff, float(diff / se), float(df), float(diff - half), float(diff + half))


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t `confidence` interval of the mean over seeds (n - 1 degrees of freedom)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        raise ValueError(f"an interval over seeds needs at least 2 values, got {len(v)}")
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def resampling_units(clusters: Sequence[str], melodies: Sequence[str]) -> np.ndarray:
    """(N,) int unit of each clip: the connected components of the graph joining clips
    of one cluster and clips of one melody. An empty cluster name ("" or None: a clip
    outside any cluster) joins nothing. Units are numbered in order of first clip."""
    if len(clusters) != len(melodies):
        raise ValueError(f"{len(clusters)} clusters for {len(melodies)} melodies")
    parent = list(range(len(clusters)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for names in (clusters, melodies):
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            if not name:
                continue
            if name in first:
                parent[root(i)] = root(first[name])
            else:
                first[name] = i
    roots = [root(i) for i in range(len(clusters))]
    number = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([number[r] for r in roots], dtype=np.int64)


def cluster_bootstrap(
    values: np.ndarray, units: np.ndarray, n: int = 2000, seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """Mean of per-query `values` (Q,) and its percentile `confidence` interval when the
    units (Q,) are resampled with replacement, every query of a drawn unit counted
    (the resampled mean weighs units by their number of queries, as the metric does).
    Paired comparisons pass per-query differences. NaN values (absent queries) are
    left out before resampling."""
    values, units = np.asarray(values, np.float64), np.asarray(units)
    if values.shape != units.shape:
        raise ValueError(f"values {values.shape} and units {units.shape} differ in shape")
    keep = ~np.isnan(values)
    values, units = values[keep], units[keep]
    if len(values) == 0:
        raise ValueError("no query to resample")
    _, unit = np.unique(units, return_inverse=True)  # (Q,) 0..U-1
    sums = np.bincount(unit, weights=values)  # (U,)
    counts = np.bincount(unit).astype(np.float64)  # (U,)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n, len(sums)))  # (n, U)
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)  # (n,)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)
