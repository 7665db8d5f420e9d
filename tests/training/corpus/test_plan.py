import hashlib
from collections import Counter, defaultdict

import pytest

from atri.training.corpus.build import SIZES, check_plan, plan_corpus
from atri.training.corpus.captions_unseen import HELD_OUT, unseen_lexicon
from atri.training.corpus.melody import melody_split
from atri.training.corpus.schema import ATTRIBUTES
from atri.training.languages import LANGS


@pytest.fixture(scope="module")
def plans():
    return {size: plan_corpus(size, seed=0) for size in SIZES}


def test_sizes(plans):
    assert sum(len(p) for p in plans["tiny"].values()) in range(230, 330)
    assert sum(len(p) for p in plans["small"].values()) in range(2300, 2850)
    default = {split: len(p) for split, p in plans["default"].items()}
    assert default["train"] == 10_000
    assert 1000 <= default["val"] < 1018 and 1200 <= default["test"] < 1218
    assert 1200 <= default["test-unseen"] < 1218


def test_no_eval_melody_in_any_train_split_of_any_size(plans):
    train = {p.melody.key for size in plans.values() for p in size["train"]}
    for size in plans.values():
        for split in ("val", "test", "test-xfont", "test-unseen"):
            assert train.isdisjoint(p.melody.key for p in size[split])


def test_split_is_a_function_of_the_melody_only(plans):
    other_seed = plan_corpus("tiny", seed=7)
    for plan_set in (*plans.values(), other_seed):
        for split, items in plan_set.items():
            home = "test" if split in ("test-xfont", "test-unseen") else split
            assert {melody_split(p.melody.pitches) for p in items} == {home}


def test_eval_clips_have_five_minimal_pair_siblings(plans):
    for split in ("val", "test", "test-unseen"):
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
    for split in ("val", "test", "test-xfont", "test-unseen"):
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


# ---------------------------------------------------------------- test-unseen

# sha256 of the tiny seed-0 plans as builder version 1 made them (before test-unseen):
# adding a split must leave every existing clip, caption and level as it was.
VERSION_1_TINY = {
    "train": "e401cb7f757f95c1",
    "val": "100fe28354c49d86",
    "test": "9fd2e5bf34794409",
    "test-xfont": "c9635f49557a8007",
}


def plan_digest(items) -> str:
    h = hashlib.sha256()
    for p in items:
        h.update(repr(p).encode())
    return h.hexdigest()[:16]


def test_existing_splits_are_as_builder_version_1_made_them(plans):
    assert {s: plan_digest(plans["tiny"][s]) for s in VERSION_1_TINY} == VERSION_1_TINY


def test_unseen_attribute_tuples_never_occur_in_train(plans):
    for size in plans.values():
        train = {p.attrs for p in size["train"]}
        unseen = size["test-unseen"]
        assert len(unseen) >= len(size["test"])
        assert not train & {p.attrs for p in unseen}
    # at the default scale a quarter of `test` does occur in train: the split is needed
    default = plans["default"]
    train = {p.attrs for p in default["train"]}
    assert sum(p.attrs in train for p in default["test"]) > 0.2 * len(default["test"])


def test_unseen_captions_share_no_held_out_phrase_or_string_with_train(plans):
    for size in plans.values():
        for lang in LANGS:
            train = {c for p in size["train"] for c in p.captions[lang]}
            unseen = [c for p in size["test-unseen"] for c in p.captions[lang]]
            assert not train & set(unseen)
            assert {len(p.captions[lang]) for p in size["test-unseen"]} == {1}
            corpus = "\n".join(train).lower()
            for p in size["test-unseen"]:
                for name in HELD_OUT:
                    phrase = unseen_lexicon()[lang][name][str(getattr(p.attrs, name))]
                    assert phrase.lower() in p.captions[lang][0].lower()
                    assert phrase.lower() not in corpus


def test_check_plan_catches_a_seen_tuple_in_test_unseen(plans):
    from dataclasses import replace

    broken = dict(plans["tiny"])
    first = broken["test-unseen"][0]
    broken["test-unseen"] = [replace(first, attrs=broken["train"][0].attrs)]
    with pytest.raises(AssertionError, match="training attribute tuple"):
        check_plan(broken)


def test_check_plan_catches_a_held_out_phrase_in_train(plans):
    from dataclasses import replace

    broken = dict(plans["tiny"])
    unseen = broken["test-unseen"][0]
    leaked = {**broken["train"][0].captions, "deu": [unseen.captions["deu"][0], "x"]}
    broken["train"] = [replace(broken["train"][0], captions=leaked), *broken["train"][1:]]
    with pytest.raises(AssertionError, match="occurs in a training caption"):
        check_plan(broken)
