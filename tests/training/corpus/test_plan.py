from collections import Counter, defaultdict

import pytest

from atri.training.corpus.build import SIZES, check_plan, plan_corpus
from atri.training.corpus.melody import melody_split
from atri.training.corpus.schema import ATTRIBUTES
from atri.training.languages import LANGS


@pytest.fixture(scope="module")
def plans():
    return {size: plan_corpus(size, seed=0) for size in SIZES}


def test_sizes(plans):
    assert sum(len(p) for p in plans["tiny"].values()) in range(200, 300)
    assert sum(len(p) for p in plans["small"].values()) in range(2000, 2500)
    default = {split: len(p) for split, p in plans["default"].items()}
    assert default["train"] == 10_000
    assert 1000 <= default["val"] < 1018 and 1200 <= default["test"] < 1218


def test_no_eval_melody_in_any_train_split_of_any_size(plans):
    train = {p.melody.key for size in plans.values() for p in size["train"]}
    for size in plans.values():
        for split in ("val", "test", "test-xfont"):
            assert train.isdisjoint(p.melody.key for p in size[split])


def test_split_is_a_function_of_the_melody_only(plans):
    other_seed = plan_corpus("tiny", seed=7)
    for plan_set in (*plans.values(), other_seed):
        for split, items in plan_set.items():
            home = "test" if split == "test-xfont" else split
            assert {melody_split(p.melody.pitches) for p in items} == {home}


def test_eval_clips_have_five_minimal_pair_siblings(plans):
    for split in ("val", "test"):
        clusters = defaultdict(list)
        for p in plans["default"][split]:
            clusters[p.cluster].append(p.attrs)
        for members in clusters.values():
            for a in members:
                siblings = sum(
                    sum(getattr(a, f) != getattr(b, f) for f in ATTRIBUTES) == 1 for b in members
                )
                assert siblings >= 5


def test_eval_captions_unique_and_full(plans):
    for split in ("val", "test", "test-xfont"):
        items = plans["default"][split]
        for lang in LANGS:
            counts = Counter(c for p in items for c in p.captions[lang])
            assert counts.most_common(1)[0][1] == 1
        assert len({p.attrs for p in items}) == len(items)


def test_captions_parallel_and_counted(plans):
    for p in plans["tiny"]["train"]:
        assert {len(p.captions[lang]) for lang in LANGS} == {2}


def test_xfont_is_test_rerendered_with_another_soundfont(plans):
    test, xfont = plans["tiny"]["test"], plans["tiny"]["test-xfont"]
    assert [p.attrs for p in test] == [p.attrs for p in xfont]
    assert [p.captions for p in test] == [p.captions for p in xfont]
    assert {p.soundfont for p in test} == {"fluidr3"}
    assert {p.soundfont for p in xfont} == {"timgm6mb"}
    assert not {p.id for p in test} & {p.id for p in xfont}


def test_check_plan_catches_a_leaked_melody(plans):
    from dataclasses import replace

    broken = dict(plans["tiny"])
    broken["train"] = [replace(broken["train"][0], melody=broken["test"][0].melody)]
    with pytest.raises(AssertionError, match="belongs to another split"):
        check_plan(broken)


def test_plan_is_deterministic_and_seed_dependent():
    a, b, c = plan_corpus("tiny", 3), plan_corpus("tiny", 3), plan_corpus("tiny", 4)
    assert a == b
    assert a["train"] != c["train"]
