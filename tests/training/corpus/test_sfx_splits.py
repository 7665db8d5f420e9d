"""The real corpus's split rules on hand-made groups: take stems, caps, coverage, and
the checks that refuse a bad split."""

from collections import defaultdict

import pytest

from atri.training.corpus.sfx.records import filename_label
from atri.training.corpus.sfx.splits import apply_caps, check_splits, cover, take_stem


def test_take_stems_and_file_name_labels():
    assert take_stem("sword_attack_07.ogg") == take_stem("sword_attack_20.ogg") == "sword_attack"
    assert take_stem("GlassHit2.wav") == "glasshit" and take_stem("foo-b.ogg") == "foo"
    assert take_stem("default_sand_footstep.2.ogg") == "default_sand_footstep"
    assert take_stem("01.ogg") == "" and take_stem("door-open.ogg") == "door-open"
    assert filename_label("x/default_sand_footstep.2.ogg") == "sand footstep"
    assert filename_label("Sound/Hits/GlassHit1.ogg") == "glass hit"


def test_caps_take_whole_groups_and_count_the_rest():
    class C:
        def __init__(self, key, group, concept="sword_clash", material=""):
            self.key, self.group, self.concept, self.package = key, group, concept, "p"
            self.attrs = {"material": material} if material else {}

    # train caps: 12 takes per group, 80 clips per concept
    clips = [C(f"g{g}/{i}", f"g{g}") for g in range(12) for i in range(15)]
    kept, drops = apply_caps(clips, {f"g{g}": "train" for g in range(12)}, lambda c: False)
    groups = defaultdict(int)
    for key in kept:
        groups[key.split("/")[0]] += 1
    assert sum(groups.values()) == 72 and set(groups.values()) == {12}  # 6 whole groups
    assert drops["take_cap"] == 12 * 3 and drops["concept_cap"] == 6 * 12

    # train keeps a capped concept's rarest material first: one snow group survives 30
    # plain footstep groups, which fill the rest of the cap (80) in hash order
    steps = [C(f"f{g}/{i}", f"f{g}", "footsteps") for g in range(30) for i in range(4)]
    steps += [C(f"snow/{i}", "snow", "footsteps", "snow") for i in range(4)]
    kept, drops = apply_caps(steps, {f"f{g}": "train" for g in range(30)} | {"snow": "train"},
                             lambda c: False)
    assert {f"snow/{i}" for i in range(4)} <= set(kept) and len(kept) == 80
    # an evaluation split caps each material apart: every material stays testable
    steps = [C(f"{m}{g}/{i}", f"{m}{g}", "footsteps", m)
             for m, n in (("snow", 1), ("tile", 1), ("ice", 1), ("mud", 1), ("sand", 5))
             for g in range(n) for i in range(3)]
    steps += [C(f"f{g}/{i}", f"f{g}", "footsteps") for g in range(6) for i in range(3)]
    kept, drops = apply_caps(steps, {c.group: "test" for c in steps}, lambda c: False)
    tested = {key.split("/")[0] for key in kept}
    assert {"snow0", "tile0", "ice0", "mud0"} <= tested
    assert sum(g.startswith("sand") for g in tested) == 4  # 12 clips of sand
    assert sum(g.startswith("f") for g in tested) == 4  # 12 plain ones
    assert drops["concept_cap"] == 3 + 6


def test_cover_puts_each_variety_in_train_and_test():
    both_val = {"a": "val", "b": "val", "c": "test-xpkg"}
    cover(both_val, {"a": {"dog_bark"}, "b": {"dog_bark"}, "c": {"dog_bark"}})
    assert sorted(both_val.values()) == ["test", "test-xpkg", "train"]
    snow = {"s1": "train", "s2": "train", "s3": "val", "g": "test"}
    varieties = {"s1": {"footsteps", "footsteps|snow"}, "s2": {"footsteps", "footsteps|snow"},
                 "s3": {"footsteps"}, "g": {"footsteps", "footsteps|grass"}}
    cover(snow, varieties)
    # snow needs a test group; footsteps (4 groups) then takes val's into train
    assert {snow["s1"], snow["s2"]} == {"train", "test"} and snow["s3"] == "train"
    alone = {"x": "val"}
    cover(alone, {"x": {"thunder"}})
    assert alone == {"x": "val"}  # one group cannot be in two splits
    three = {"a": "train", "b": "val", "c": "test"}  # the snow of builder 3
    cover(three, {g: {"footsteps|snow"} for g in three})
    assert sorted(three.values()) == ["test", "train", "train"]
    kept = {"a": "train", "b": "train", "c": "test", "d": "test"}
    cover(kept, {"a": {"cat"}, "b": {"cat"}, "c": {"cat"}, "d": {"cat", "cat|wood"}})
    assert kept == {"a": "train", "b": "train", "c": "test", "d": "test"}


def test_the_split_checks_fire():
    class C:
        def __init__(self, key, group, concept, package="p"):
            self.key, self.group, self.concept, self.package = key, group, concept, package

    full = {"x": "val", "y": "test", "z": "test-xpkg", "w": "test-zeroshot"}
    clips = [C(k, k, "wind", "q") for k in full] + [C("a", "g", "thud"), C("b", "g", "thud")]
    sha = {c.key: c.key for c in clips}
    with pytest.raises(AssertionError, match="group g is in train and val"):
        check_splits(clips, {**full, "a": "train", "b": "val"}, sha, (), ())
    apart = [*clips[:-1], C("b", "h", "thud")]  # other groups, the same audio
    with pytest.raises(AssertionError, match="sha256 s is in train and val"):
        check_splits(apart, {**full, "a": "train", "b": "val"}, {**sha, "a": "s", "b": "s"}, (), ())
    with pytest.raises(AssertionError, match="zero-shot concept thud in train"):
        check_splits(clips, {**full, "a": "train", "b": "train"}, sha, (), ("thud",))
    with pytest.raises(AssertionError, match="held-out package p in train"):
        check_splits(clips, {**full, "a": "train", "b": "train"}, sha, ("p",), ())
    with pytest.raises(AssertionError, match=r"test holds concepts never in train: \['wind'\]"):
        check_splits(clips, {**full, "a": "train", "b": "train"}, sha, (), ())
    with pytest.raises(AssertionError, match=r"empty split\(s\): \['train'\]"):
        check_splits(clips, {**full, "a": "val", "b": "val"}, sha, (), ())
