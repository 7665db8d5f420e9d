"""Per-strategy epoch draws: seeded, fresh each epoch, uniform where the spec says so,
absent languages never drawn (metrics.md), ML-CLAP's mixture with its duplicates."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from atri.training.data.manifest import ClipRecord, ManifestError, read_manifest, write_manifest
from atri.training.languages import LANGS
from atri.training.objectives.sampling import CaptionTable, cacl_eligible
from atri.training.objectives.strategies import NAMES as STRATEGIES
from atri.training.objectives.strategies import draw_epoch

K = len(LANGS)
# chi-square 0.999 quantiles by degrees of freedom: a correct sampler fails 1 in 1000
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


def chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def full_table(n: int, c: int = 2) -> CaptionTable:
    return CaptionTable(
        langs=LANGS, n_captions=np.full(n, c, dtype=np.int64), has=np.ones((n, K), dtype=bool)
    )


def ragged_table(n: int, seed: int = 0) -> CaptionTable:
    """Clips with random language subsets (English kept in most) and 1-5 captions."""
    rng = np.random.default_rng(seed)
    has = rng.random((n, K)) < 0.6
    has[np.arange(n), rng.integers(0, K, n)] = True  # at least one language each
    return CaptionTable(langs=LANGS, n_captions=rng.integers(1, 6, n), has=has)


def plan_key(plan) -> tuple:
    return (plan.clip.tobytes(), plan.caption.tobytes(), plan.lang.tobytes())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_seeded_and_fresh_each_epoch(strategy: str) -> None:
    table = ragged_table(200)
    a = draw_epoch(strategy, table, seed=3, epoch=1)
    assert plan_key(a) == plan_key(draw_epoch(strategy, table, seed=3, epoch=1))
    assert plan_key(a) != plan_key(draw_epoch(strategy, table, seed=3, epoch=2))
    assert plan_key(a) != plan_key(draw_epoch(strategy, table, seed=4, epoch=1))
    # the order changes too, not only the languages
    b = draw_epoch(strategy, table, seed=3, epoch=2)
    assert not np.array_equal(a.clip[:20], b.clip[:20])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_only_present_captions_are_drawn(strategy: str) -> None:
    table = ragged_table(300, seed=1)
    for epoch in range(3):
        plan = draw_epoch(strategy, table, seed=0, epoch=epoch)
        present = plan.present  # (M, L)
        rows, slots = np.nonzero(present)
        assert table.has[plan.clip[rows], plan.lang[rows, slots]].all()
        assert (plan.caption >= 0).all()
        assert (plan.caption < table.n_captions[plan.clip]).all()
        assert present.any(axis=1).all()  # no item without a caption


def test_mlclap_languages_uniform() -> None:
    table = full_table(4000)
    plan = draw_epoch("mlclap", table, seed=0, epoch=0)
    assert sorted(plan.clip) == list(range(4000))  # each clip once
    assert plan.lang.shape == (4000, 1)
    counts = np.bincount(plan.lang[:, 0], minlength=K)
    assert chi_square(counts) < CHI2_999[K - 1], counts
    caption_counts = np.bincount(plan.caption, minlength=2)
    assert chi_square(caption_counts) < CHI2_999[1], caption_counts


def test_mlclap_uniform_among_the_clips_languages() -> None:
    has = np.zeros((3000, K), dtype=bool)
    has[:, [LANGS.index("fra"), LANGS.index("jpn"), LANGS.index("zho")]] = True
    table = CaptionTable(langs=LANGS, n_captions=np.full(3000, 5), has=has)
    plan = draw_epoch("mlclap", table, seed=1, epoch=0)
    counts = Counter(LANGS[i] for i in plan.lang[:, 0])
    assert set(counts) == {"fra", "jpn", "zho"}
    assert chi_square(np.array(list(counts.values()))) < CHI2_999[2], counts
    assert chi_square(np.bincount(plan.caption, minlength=5)) < CHI2_999[4]


def test_one_clip_over_epochs_is_uniform() -> None:
    table = full_table(1, c=3)
    draws = [draw_epoch("mlclap", table, seed=7, epoch=e) for e in range(1600)]
    langs = np.bincount([d.lang[0, 0] for d in draws], minlength=K)
    captions = np.bincount([d.caption[0] for d in draws], minlength=3)
    assert chi_square(langs) < CHI2_999[K - 1], langs
    assert chi_square(captions) < CHI2_999[2], captions


def test_cacl_english_plus_uniform_other() -> None:
    table = full_table(3500)
    plan = draw_epoch("cacl", table, seed=0, epoch=0)
    eng = LANGS.index("eng")
    assert plan.lang.shape == (3500, 2)
    assert (plan.lang[:, 0] == eng).all()
    others = np.bincount(plan.lang[:, 1], minlength=K)
    assert others[eng] == 0
    assert chi_square(np.delete(others, eng)) < CHI2_999[K - 2], others


def test_cacl_leaves_out_clips_that_cannot_form_a_triplet() -> None:
    has = np.ones((4, K), dtype=bool)
    has[1] = False
    has[1, LANGS.index("eng")] = True  # English only
    has[2, LANGS.index("eng")] = False  # no English
    table = CaptionTable(langs=LANGS, n_captions=np.ones(4, dtype=np.int64), has=has)
    assert cacl_eligible(table).tolist() == [True, False, False, True]
    plan = draw_epoch("cacl", table, seed=0, epoch=0)
    assert sorted(plan.clip) == [0, 3]


def test_kcl_all_languages_of_one_caption_index() -> None:
    table = ragged_table(100, seed=2)
    plan = draw_epoch("kcl", table, seed=0, epoch=0)
    assert sorted(plan.clip) == list(range(100))
    assert plan.lang.shape == (100, K)
    np.testing.assert_array_equal(plan.present, table.has[plan.clip])
    rows, slots = np.nonzero(plan.present)
    np.testing.assert_array_equal(plan.lang[rows, slots], slots)  # slot k holds language k
    assert plan_key(plan) == plan_key(draw_epoch("kcl-balanced", table, seed=0, epoch=0))


def test_mixture_keeps_english_adds_others_with_probability() -> None:
    n, c = 1000, 2
    table = full_table(n, c)
    plan = draw_epoch("mlclap-mixture", table, seed=0, epoch=0, mixture_prob=0.1)
    eng = LANGS.index("eng")
    rows = zip(plan.clip.tolist(), plan.caption.tolist(), plan.lang[:, 0].tolist(), strict=True)
    items = Counter(rows)
    assert max(items.values()) == 1  # no caption twice
    english = {(i, j) for i, j, lang in items if lang == eng}
    assert english == {(i, j) for i in range(n) for j in range(c)}
    n_other = len(items) - len(english)
    candidates = n * c * (K - 1)
    sd = np.sqrt(candidates * 0.1 * 0.9)
    assert abs(n_other - 0.1 * candidates) < 4 * sd, n_other


def test_mixture_repeats_clips_within_a_batch() -> None:
    table = full_table(120, c=2)
    plan = draw_epoch("mlclap-mixture", table, seed=0, epoch=0)
    duplicated = [
        len(set(b.clip)) < len(b.clip)
        for b in (plan.batch(i, 24) for i in range(plan.n_batches(24)))
    ]
    assert any(duplicated)  # so the loss needs the clip ids to mask these pairs


def test_mixture_anchors_a_clip_without_english() -> None:
    has = np.zeros((1, K), dtype=bool)
    has[0, [LANGS.index("deu"), LANGS.index("jpn")]] = True
    table = CaptionTable(langs=LANGS, n_captions=np.array([3]), has=has)
    anchors = Counter()
    for epoch in range(200):
        plan = draw_epoch("mlclap-mixture", table, seed=0, epoch=epoch, mixture_prob=0.0)
        assert len(set(plan.lang[:, 0])) == 1 and sorted(plan.caption) == [0, 1, 2]
        anchors[LANGS[plan.lang[0, 0]]] += 1
    assert set(anchors) == {"deu", "jpn"}
    assert chi_square(np.array(list(anchors.values()))) < CHI2_999[1]


def test_batches_are_full_slices_in_order() -> None:
    plan = draw_epoch("mlclap", full_table(50), seed=0, epoch=0)
    assert plan.n_batches(16) == 3
    assert np.array_equal(plan.batch(1, 16).clip, plan.clip[16:32])


def test_table_from_manifest(tmp_path: Path) -> None:
    records = [
        ClipRecord("a", "a.wav", {"eng": ["x", "y"], "fra": ["x2", "y2"]}),
        ClipRecord("b", "b.wav", {"jpn": ["z"]}),
    ]
    write_manifest(tmp_path / "m.jsonl", records)
    manifest = read_manifest(tmp_path / "m.jsonl", check_audio=False)
    table = CaptionTable.from_manifest(manifest, ("eng", "fra", "jpn"))
    assert table.n_captions.tolist() == [2, 1]
    assert table.has.tolist() == [[True, True, False], [False, False, True]]
    with pytest.raises(ManifestError, match=r"1 clip\(s\) have no caption.*: b"):
        CaptionTable.from_manifest(manifest, ("eng", "fra"))
