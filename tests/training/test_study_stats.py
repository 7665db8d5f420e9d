import math

import numpy as np
import pytest
from scipy import stats

from atri.training.evaluation.study_stats import (
    cluster_bootstrap,
    mean_interval,
    resampling_units,
    welch,
)


def naive_welch(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return (ma - mb) / math.sqrt(va + vb), df


@pytest.mark.parametrize("na,nb,seed", [(3, 3, 0), (5, 5, 1), (2, 7, 2), (5, 3, 3)])
def test_welch_against_a_loop_and_scipy(na, nb, seed):
    rng = np.random.default_rng(seed)
    a, b = list(rng.normal(1, 1, na)), list(rng.normal(0, 3, nb))
    w = welch(a, b)
    t, df = naive_welch(a, b)
    assert w.t == pytest.approx(t, rel=1e-12) and w.df == pytest.approx(df, rel=1e-12)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert w.t == pytest.approx(ref.statistic, rel=1e-10)
    low, high = ref.confidence_interval(0.95)
    assert (w.low, w.high) == pytest.approx((low, high), rel=1e-9)
    assert min(na, nb) - 1 <= w.df <= na + nb - 2  # Welch-Satterthwaite bounds


def test_welch_is_na_for_a_zero_variance_arm():
    w = welch([50.0, 50.0, 50.0], [48.0, 49.0, 47.5])
    assert w.diff == pytest.approx(50 - 48.1666666, abs=1e-6)
    assert (w.t, w.df, w.low, w.high) == (None, None, None, None)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        welch([1.0], [1.0, 2.0])


def test_mean_interval_against_scipy():
    v = [41.2, 42.0, 40.1, 43.3, 41.9]
    low, high = mean_interval(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert (low, high) == pytest.approx(ref, rel=1e-12)


def naive_units(clusters, melodies):
    """Flood fill: clips are joined by a shared non-empty cluster or melody."""
    n = len(clusters)
    unit = [-1] * n
    k = 0
    for start in range(n):
        if unit[start] >= 0:
            continue
        stack = [start]
        unit[start] = k
        while stack:
            i = stack.pop()
            for j in range(n):
                linked = (clusters[i] and clusters[i] == clusters[j]) or (
                    melodies[i] and melodies[i] == melodies[j])
                if unit[j] < 0 and linked:
                    unit[j] = k
                    stack.append(j)
        k += 1
    return unit


@pytest.mark.parametrize("seed", range(5))
def test_units_against_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    n = 60
    clusters = [f"c{c}" for c in rng.integers(0, 15, n)]
    melodies = [f"m{m}" if rng.random() < 0.8 else "" for m in rng.integers(0, 40, n)]
    assert list(resampling_units(clusters, melodies)) == naive_units(clusters, melodies)


def test_units_join_clusters_through_a_shared_melody():
    units = resampling_units(["a", "a", "b", "c", ""], ["m1", "m2", "m2", "m3", ""])
    assert list(units) == [0, 0, 0, 1, 2]


def naive_bootstrap(values, units, n, seed):
    """The same draws, one resample at a time: gather every query of each drawn unit."""
    names = sorted(set(units))
    members = {u: [v for v, w in zip(values, units, strict=True) if w == u] for u in names}
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(n):
        drawn = rng.integers(0, len(names), size=len(names))
        pooled = [v for d in drawn for v in members[names[d]]]
        means.append(sum(pooled) / len(pooled))
    return means


def test_cluster_bootstrap_against_a_loop():
    rng = np.random.default_rng(3)
    units = rng.integers(0, 12, 90)
    values = rng.normal(size=90) + units * 0.3
    mean, low, high = cluster_bootstrap(values, units, n=300, seed=5)
    # the vectorised version draws all resamples at once from the same stream
    rng2 = np.random.default_rng(5)
    draws = rng2.integers(0, 12, size=(300, 12))
    names = sorted(set(units))
    members = {u: values[units == u] for u in names}
    ref = [np.concatenate([members[names[d]] for d in row]).mean() for row in draws]
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])), rel=1e-12)
    # and a one-resample-at-a-time loop agrees in distribution
    loop = naive_bootstrap(list(values), list(units), 2000, 9)
    _, low2, high2 = cluster_bootstrap(values, units, n=2000, seed=9)
    assert (low2, high2) == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])), abs=0.08)


def test_clustered_queries_get_wider_intervals_than_independent_ones():
    """40 units of 20 identical queries: resampling units is resampling 40 values, not
    800; the query-level interval is about sqrt(20) times too narrow."""
    rng = np.random.default_rng(0)
    per_unit = rng.normal(size=40)
    values = np.repeat(per_unit, 20)
    units = np.repeat(np.arange(40), 20)
    _, lo_c, hi_c = cluster_bootstrap(values, units)
    _, lo_q, hi_q = cluster_bootstrap(values, np.arange(800))
    assert (hi_c - lo_c) / (hi_q - lo_q) == pytest.approx(np.sqrt(20), rel=0.25)


def test_cluster_bootstrap_skips_absent_queries_and_checks_shapes():
    mean, _, _ = cluster_bootstrap(np.array([1.0, np.nan, 3.0]), np.array([0, 0, 1]), n=50)
    assert mean == 2.0
    with pytest.raises(ValueError, match="differ in shape"):
        cluster_bootstrap(np.zeros(3), np.zeros(4))
