"""Losses against naive Python loops, finite-difference gradients and sanity properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atri.training.objectives.losses import (
    cacl_loss,
    duplicate_caption_mask,
    kcl_balanced_loss,
    kcl_loss,
    mlclap_loss,
    mlclap_mixture_loss,
)

DIM = 6


def _unit(*shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-1)


def _dot(x: torch.Tensor, y: torch.Tensor) -> float:
    return sum(float(x[d]) * float(y[d]) for d in range(x.shape[0]))


def _neg_log_softmax(scores: list[float], target: int) -> float:
    return -(scores[target] - math.log(sum(math.exp(s) for s in scores)))


def _naive_infonce(a: torch.Tensor, t: torch.Tensor, tau: float, ids: list[int] | None = None):
    """Symmetric InfoNCE by loops; pairs of rows with equal ids (other than i) dropped."""
    b = a.shape[0]
    ids = list(range(b)) if ids is None else ids
    total = 0.0
    for i in range(b):
        keep = [j for j in range(b) if j == i or ids[j] != ids[i]]
        a2t = [_dot(a[i], t[j]) / tau for j in keep]
        t2a = [_dot(t[i], a[j]) / tau for j in keep]
        total += _neg_log_softmax(a2t, keep.index(i)) + _neg_log_softmax(t2a, keep.index(i))
    return total / (2 * b)


def _naive_kcl_terms(a: torch.Tensor, t: torch.Tensor, tau: float, present: list[list[bool]],
                     ids: list[list[int]] | None = None):
    """(sum of a2t terms, sum of t2a terms, n present) straight from metrics.md; with `ids`
    (caption strings as numbers), another clip's caption equal to one of clip i's leaves
    a_i's denominator, and that clip's audio leaves the caption's t2a denominator."""
    b, k = t.shape[0], t.shape[1]
    slots = [(j, m) for j in range(b) for m in range(k) if present[j][m]]

    def texts(i: int) -> set[int]:
        return {ids[i][m] for m in range(k) if present[i][m]} if ids else set()

    sum_a2t = sum_t2a = 0.0
    for i in range(b):
        kept = [(j, m) for (j, m) in slots if j == i or not ids or ids[j][m] not in texts(i)]
        denom = [_dot(a[i], t[j, m]) / tau for (j, m) in kept]
        for m in range(k):
            if not present[i][m]:
                continue
            sum_a2t += _neg_log_softmax(denom, kept.index((i, m)))
            audios = [j for j in range(b) if j == i or not ids or ids[i][m] not in texts(j)]
            t2a = [_dot(t[i, m], a[j]) / tau for j in audios]
            sum_t2a += _neg_log_softmax(t2a, audios.index(i))
    return sum_a2t, sum_t2a, len(slots)


def _naive_kcl(a, t, tau, present, balanced=False, ids=None):
    k = t.shape[1]
    sum_a2t, sum_t2a, n = _naive_kcl_terms(a, t, tau, present, ids)
    l_a2t, l_t2a = k * sum_a2t / n, sum_t2a / n
    return (l_a2t / k + l_t2a) / 2 if balanced else (l_a2t + l_t2a) / (2 * k)


def _naive_multi_positive(a, t, tau, present, ids, balanced=False):
    """kcl / kcl-balanced with equal ids as positives, by loops: every present caption in
    each denominator; a clip's positives are its own present captions and the others'
    captions equal to one of them, a caption's are its clip and the clips it describes;
    -log p averaged over an anchor's positives, a clip's mean counted once per caption."""
    b, k = t.shape[0], t.shape[1]
    slots = [(j, m) for j in range(b) for m in range(k) if present[j][m]]

    def texts(i: int) -> set[int]:
        return {ids[i][m] for m in range(k) if present[i][m]}

    sum_a2t = sum_t2a = 0.0
    for i in range(b):
        scores = [_dot(a[i], t[j, m]) / tau for (j, m) in slots]
        pos = [n for n, (j, m) in enumerate(slots) if j == i or ids[j][m] in texts(i)]
        mean = sum(_neg_log_softmax(scores, n) for n in pos) / len(pos)
        sum_a2t += mean * sum(present[i])
        for m in range(k):
            if not present[i][m]:
                continue
            t2a = [_dot(t[i, m], a[j]) / tau for j in range(b)]
            clips = [j for j in range(b) if j == i or ids[i][m] in texts(j)]
            sum_t2a += sum(_neg_log_softmax(t2a, j) for j in clips) / len(clips)
    l_a2t, l_t2a = k * sum_a2t / len(slots), sum_t2a / len(slots)
    return (l_a2t / k + l_t2a) / 2 if balanced else (l_a2t + l_t2a) / (2 * k)


def _random_present(b: int, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    present = torch.rand(b, k, generator=gen) > 0.35
    present[:, 0] |= ~present.any(dim=1)  # every clip keeps at least one caption
    return present


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_mlclap_matches_loop(batch: int, tau: float) -> None:
    a, t = _unit(batch, DIM, seed=batch), _unit(batch, DIM, seed=batch + 100)
    got = mlclap_loss(a, t, torch.tensor(tau, dtype=torch.float64))
    assert got.item() == pytest.approx(_naive_infonce(a, t, tau), rel=1e-10)


@pytest.mark.parametrize("ids", [[0, 1, 2], [0, 0, 1], [3, 1, 3, 1, 2], [7, 7, 7, 2]])
def test_mlclap_mixture_matches_loop(ids: list[int]) -> None:
    b = len(ids)
    a, t = _unit(b, DIM, seed=b), _unit(b, DIM, seed=b + 1)
    got = mlclap_mixture_loss(a, t, torch.tensor(0.1, dtype=torch.float64), torch.tensor(ids))
    assert got.item() == pytest.approx(_naive_infonce(a, t, 0.1, ids), rel=1e-10)


def test_mlclap_mixture_with_distinct_clips_is_mlclap() -> None:
    a, t = _unit(4, DIM, seed=1), _unit(4, DIM, seed=2)
    tau = torch.tensor(0.07, dtype=torch.float64)
    got = mlclap_mixture_loss(a, t, tau, torch.tensor([5, 2, 9, 0]))
    assert got.item() == pytest.approx(mlclap_loss(a, t, tau).item(), rel=1e-12)


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_cacl_matches_loop(batch: int) -> None:
    a, e, m = (_unit(batch, DIM, seed=batch + s) for s in (0, 10, 20))
    expected = _naive_infonce(a, e, 0.2) + _naive_infonce(a, m, 0.2) + _naive_infonce(e, m, 0.2)
    got = cacl_loss(a, e, m, torch.tensor(0.2, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("batch", "k"), [(1, 1), (2, 3), (4, 2), (3, 4)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("balanced", [False, True])
def test_kcl_matches_loop(batch: int, k: int, masked: bool, balanced: bool) -> None:
    a, t = _unit(batch, DIM, seed=batch), _unit(batch, k, DIM, seed=batch + k)
    present = (
        _random_present(batch, k, seed=batch * k)
        if masked
        else torch.ones(batch, k, dtype=torch.bool)
    )
    if masked:
        t = t.masked_fill(~present[..., None], float("nan"))  # absent slots must not leak
    tau = torch.tensor(0.1, dtype=torch.float64)
    fn = kcl_balanced_loss if balanced else kcl_loss
    got = fn(a, t, tau, present if masked else None)
    expected = _naive_kcl(a, t, 0.1, present.tolist(), balanced)
    assert got.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("ids", [
    [[0, 1], [2, 3], [4, 5]],  # all distinct: the plain loss
    [[0, 1], [0, 3], [4, 5]],  # clips 0 and 1 share their first caption
    [[0, 1], [1, 0], [0, 9]],  # shared across slots (and languages), three ways
    [[7, 7], [7, 7], [7, 7]],  # one caption (or group) for all
])
@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("positive", [False, True])
def test_kcl_with_shared_ids_matches_loop(ids, balanced: bool, positive: bool) -> None:
    """Shared ids masked out of the negatives (`--mask-duplicate-captions`, `--mask-same`)
    or made positives (`--multi-positive`), against loops; all distinct, either is the
    plain loss; shared, the two differ from each other and from it."""
    b, k = 3, 2
    a, t = _unit(b, DIM, seed=11), _unit(b, k, DIM, seed=12)
    present = torch.tensor([[True, True], [True, False], [True, True]])
    t = t.masked_fill(~present[..., None], float("nan"))
    tau = torch.tensor(0.1, dtype=torch.float64)
    fn = kcl_balanced_loss if balanced else kcl_loss
    got = fn(a, t, tau, present, torch.tensor(ids), multi_positive=positive)
    expected = (_naive_multi_positive(a, t, 0.1, present.tolist(), ids, balanced) if positive
                else _naive_kcl(a, t, 0.1, present.tolist(), balanced, ids))
    assert got.item() == pytest.approx(expected, rel=1e-10)
    plain = fn(a, t, tau, present).item()
    if len({i for row in ids for i in row}) == b * k:
        assert got.item() == pytest.approx(plain, rel=1e-12)
    else:
        other = fn(a, t, tau, present, torch.tensor(ids), multi_positive=not positive).item()
        assert got.item() != pytest.approx(plain, rel=1e-6)
        assert got.item() != pytest.approx(other, rel=1e-6)


def test_multi_positive_pulls_a_caption_toward_every_clip_it_describes() -> None:
    """Two recordings of one group and a third apart: as positives, the descent step on the
    first recording's caption points toward the second recording; masked, that recording
    plays no part in the caption's gradient (moving it changes nothing)."""
    t = F.normalize(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]]],
                                 dtype=torch.float64), dim=-1).requires_grad_(True)
    ids, tau = torch.tensor([[0], [0], [1]]), torch.tensor(0.1, dtype=torch.float64)

    def step(second: list[float], positive: bool) -> torch.Tensor:
        a = F.normalize(torch.tensor([[1.0, 0.2], second, [-1.0, 0.1]], dtype=torch.float64),
                        dim=-1)
        t.grad = None
        kcl_loss(a, t, tau, None, ids, multi_positive=positive).backward()
        return -t.grad[0, 0]  # the descent step on clip 0's caption

    toward = F.normalize(torch.tensor([0.3, 1.0], dtype=torch.float64), dim=0)
    assert float(step([0.3, 1.0], True) @ toward) > 0.5
    assert torch.allclose(step([0.3, 1.0], False), step([0.9, -0.4], False), atol=1e-12)
    assert not torch.allclose(step([0.3, 1.0], True), step([0.9, -0.4], True), atol=1e-3)


def test_clips_with_the_same_captions_are_no_negatives() -> None:
    """Two recordings captioned alike, far apart in the embedding space: without the mask
    each one's caption is a negative of the other and the loss stays high; with it, each
    clip is scored against its own captions only (one language: InfoNCE over one pair)."""
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = a[:, None, :]  # (2, 1, 2): each clip's caption sits on its audio
    tau = torch.tensor(0.05, dtype=torch.float64)
    same = torch.tensor([[4], [4]])
    assert kcl_loss(a, t, tau, None, same).item() == pytest.approx(0.0, abs=1e-12)
    assert kcl_loss(a, t, tau).item() > 1e-9
    mask = duplicate_caption_mask(same, torch.ones(2, 1, dtype=torch.bool))
    assert mask.tolist() == [[False, True], [True, False]]


def test_kcl_full_case_is_the_spec_formula() -> None:
    # Without absent slots: L_a2t = (1/B) sum_i sum_k, L_t2a = (1/(BK)) sum, L = (+)/(2K).
    b, k = 3, 2
    a, t = _unit(b, DIM, seed=3), _unit(b, k, DIM, seed=4)
    sum_a2t, sum_t2a, _ = _naive_kcl_terms(a, t, 0.1, [[True] * k] * b)
    expected = (sum_a2t / b + sum_t2a / (b * k)) / (2 * k)
    assert kcl_loss(a, t, torch.tensor(0.1, dtype=torch.float64)).item() == pytest.approx(expected)


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_kcl_with_one_language_is_mlclap(batch: int) -> None:
    a, t = _unit(batch, DIM, seed=batch), _unit(batch, 1, DIM, seed=batch + 7)
    tau = torch.tensor(0.07, dtype=torch.float64)
    ref = mlclap_loss(a, t[:, 0], tau).item()
    assert kcl_loss(a, t, tau).item() == pytest.approx(ref, rel=1e-12)
    assert kcl_balanced_loss(a, t, tau).item() == pytest.approx(ref, rel=1e-12)


def test_kcl_balanced_ignores_a_language_absent_everywhere() -> None:
    # Both directions are means over present pairs, so an all-absent slot is as if dropped.
    a, t = _unit(4, DIM, seed=0), _unit(4, 3, DIM, seed=1)
    present = torch.ones(4, 3, dtype=torch.bool)
    present[:, 1] = False
    tau = torch.tensor(0.1, dtype=torch.float64)
    got = kcl_balanced_loss(a, t, tau, present).item()
    assert got == pytest.approx(kcl_balanced_loss(a, t[:, [0, 2]], tau).item(), rel=1e-12)


def test_kcl_rejects_empty_batch() -> None:
    a, t = _unit(2, DIM, seed=0), _unit(2, 2, DIM, seed=1)
    with pytest.raises(ValueError, match="no caption"):
        kcl_loss(a, t, torch.tensor(0.1), torch.zeros(2, 2, dtype=torch.bool))


def test_perfect_alignment_reaches_the_minimum() -> None:
    # Orthonormal clips, every caption equal to its audio, small tau: InfoNCE -> 0; KCL's a2t
    # keeps the K-1 other positives in its denominator, so each a2t term -> log K and
    # L_KCL -> (K log K + 0) / (2K) = log(K) / 2; the balanced form -> log(K) / 2 too.
    b, k = 4, 3
    a = torch.eye(b, DIM, dtype=torch.float64)
    tau = torch.tensor(0.01, dtype=torch.float64)
    assert mlclap_loss(a, a, tau).item() < 1e-30
    assert cacl_loss(a, a, a, tau).item() < 1e-30
    t = a[:, None, :].expand(b, k, DIM)
    assert kcl_loss(a, t, tau).item() == pytest.approx(math.log(k) / 2, abs=1e-12)
    assert kcl_balanced_loss(a, t, tau).item() == pytest.approx(math.log(k) / 2, abs=1e-12)
    # Misaligned (captions shifted by one clip) is far worse.
    assert mlclap_loss(a, a.roll(1, 0), tau).item() > 50


def test_mlclap_is_symmetric_and_permutation_invariant() -> None:
    a, t = _unit(5, DIM, seed=0), _unit(5, DIM, seed=1)
    tau = torch.tensor(0.07, dtype=torch.float64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert mlclap_loss(a, t, tau).item() == pytest.approx(mlclap_loss(t, a, tau).item())
    assert mlclap_loss(a, t, tau).item() == pytest.approx(mlclap_loss(a[perm], t[perm], tau).item())


def _grad_inputs(*shapes: tuple[int, ...], seed: int):
    return [_unit(*shape, seed=seed + n).requires_grad_() for n, shape in enumerate(shapes)]


def test_gradients_match_finite_differences() -> None:
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    a, t = _grad_inputs((3, 4), (3, 4), seed=0)
    assert torch.autograd.gradcheck(mlclap_loss, (a, t, tau))
    ids = torch.tensor([0, 1, 0])
    assert torch.autograd.gradcheck(lambda x, y, s: mlclap_mixture_loss(x, y, s, ids), (a, t, tau))
    a, e, m = _grad_inputs((3, 4), (3, 4), (3, 4), seed=1)
    assert torch.autograd.gradcheck(cacl_loss, (a, e, m, tau))
    a, tk = _grad_inputs((3, 4), (3, 2, 4), seed=2)
    present = torch.tensor([[True, False], [True, True], [False, True]])
    dup = torch.tensor([[0, 1], [0, 2], [3, 1]])
    for fn in (kcl_loss, kcl_balanced_loss):
        assert torch.autograd.gradcheck(fn, (a, tk, tau))
        assert torch.autograd.gradcheck(lambda x, y, s, f=fn: f(x, y, s, present), (a, tk, tau))
        assert torch.autograd.gradcheck(lambda x, y, s, f=fn: f(x, y, s, present, dup),
                                        (a, tk, tau))


def test_absent_slots_get_no_gradient() -> None:
    a = _unit(3, 4, seed=0).requires_grad_()
    t = _unit(3, 2, 4, seed=1).requires_grad_()
    present = torch.tensor([[True, False], [True, True], [False, True]])
    kcl_loss(a, t, torch.tensor(0.1, dtype=torch.float64), present).backward()
    assert torch.all(t.grad[~present] == 0)
    assert torch.all(t.grad[present].abs().sum(-1) > 0)
    assert torch.isfinite(a.grad).all()
