import numpy as np
import pytest

from atri.training.evaluation.rank_consistency import (
    a2t_top1,
    log_rank_variance,
    t2a_top1,
    top1_agreement,
)


def unit(rng, *shape):
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("n,c,d,seed", [(7, 2, 4, 0), (12, 3, 8, 1), (5, 1, 3, 2)])
def test_top1_against_loops(n, c, d, seed):
    rng = np.random.default_rng(seed)
    audio, text = unit(rng, n, d), unit(rng, n, c, d)
    present = rng.random((n, c)) < 0.8
    present[0] = True
    t2a, a2t = t2a_top1(audio, text, present), a2t_top1(audio, text, present)
    for i in range(n):
        for j in range(c):
            scores = [float(text[i, j] @ audio[k]) for k in range(n)]
            expected = scores.index(max(scores)) if present[i, j] else -1
            assert t2a[i, j] == expected
        best, where = -np.inf, -1
        for k in range(n):
            for j in range(c):
                s = float(audio[i] @ text[k, j])
                if present[k, j] and s > best:
                    best, where = s, k
        assert a2t[i] == where


def test_agreement_and_log_rank_variance_against_loops():
    rng = np.random.default_rng(4)
    top1 = rng.integers(0, 3, size=(8, 50))
    top1[:, :10] = 2  # some slots agree in every language
    top1[3, 45] = -1  # an absent slot
    agree = top1_agreement(top1)
    ranks = rng.integers(1, 40, size=(8, 50)).astype(float)
    ranks[5, 7] = np.nan
    spread = log_rank_variance(ranks)
    for m in range(50):
        column = [int(top1[k, m]) for k in range(8)]
        if -1 in column:
            assert np.isnan(agree[m])
        else:
            assert agree[m] == float(len(set(column)) == 1)
        logs = [np.log(ranks[k, m]) for k in range(8)]
        if any(np.isnan(logs)):
            assert np.isnan(spread[m])
        else:
            mean = sum(logs) / 8
            assert spread[m] == pytest.approx(sum((x - mean) ** 2 for x in logs) / 8)
    assert agree[:10].tolist() == [1.0] * 10


def test_log_rank_variance_is_scale_free_where_mrv_is_not():
    """Ranks 2 and 4 vs 200 and 400: the same ratio, the same log-rank variance, while
    their rank variance differs 10,000-fold (MRV's mechanical link with accuracy)."""
    near, far = np.array([[2.0], [4.0]]), np.array([[200.0], [400.0]])
    assert log_rank_variance(near) == pytest.approx(log_rank_variance(far))
    assert far.var() / near.var() == pytest.approx(10_000)
