"""`atri corpus build --train-soundfonts`: training clips rendered with a soundfont drawn
per clip, the evaluation splits untouched, the reserved soundfonts refused; and
`--val-soundfont`: the val clips again in a soundfont no training clip uses."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from atri.cli import main as atri_main
from atri.training.corpus.build import SHARD_SIZE, plan_corpus, render_all, shards_of
from atri.training.corpus.soundfonts import (
    REFUSED,
    SOUNDFONTS,
    TRAIN_SOUNDFONTS,
    assign_train_soundfonts,
    check_train_soundfonts,
    check_val_soundfont,
)
from atri.training.data.manifest import read_manifest

FONTS = ("fluidr3", "musescore", "fluidr3mono", "opl3")
EVAL_SPLITS = ("val", "test", "test-xfont")


@pytest.mark.parametrize(("names", "message"), [
    (["fluidr3", "timgm6mb"], "'timgm6mb' is refused: reserved for evaluation"),
    (["csound"], "'csound' is refused: reserved for evaluation"),
    (["gs"], "'gs' is refused: fluid-soundfont-gs ships only GS variation"),
    (["fluidr3", "nope"], "unknown soundfont 'nope'; choose among fluidr3, musescore"),
    ([], "name at least one"),
    (["opl3", "opl3"], "twice"),
])
def test_bad_lists_are_refused_by_name(names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_train_soundfonts(names)


def test_reserved_soundfonts_can_never_train() -> None:
    assert not {"timgm6mb", "csound"} & set(TRAIN_SOUNDFONTS)
    assert set(TRAIN_SOUNDFONTS) <= set(SOUNDFONTS) and set(REFUSED).isdisjoint(TRAIN_SOUNDFONTS)
    assert {SOUNDFONTS[f].package for f in TRAIN_SOUNDFONTS}.isdisjoint(
        {"timgm6mb-soundfont", "csound-soundfont"})


def test_cli_refuses_a_reserved_soundfont(tmp_path: Path, capsys) -> None:
    out = tmp_path / "corpus"
    args = ["corpus", "build", str(out), "--size", "tiny", "--train-soundfonts"]
    assert atri_main([*args, "musescore,timgm6mb"]) == 2
    assert "'timgm6mb' is refused" in capsys.readouterr().err
    assert atri_main([*args, "csound"]) == 2
    assert "'csound' is refused" in capsys.readouterr().err
    assert not out.exists()


def test_only_the_training_soundfont_changes() -> None:
    default = plan_corpus("tiny", 0)
    assert default == plan_corpus("tiny", 0, ("fluidr3",))
    mixed = plan_corpus("tiny", 0, FONTS)
    for split in EVAL_SPLITS:
        assert mixed[split] == default[split]
    assert [replace(p, soundfont="fluidr3") for p in mixed["train"]] == default["train"]
    assert {p.soundfont for p in mixed["train"]} == set(FONTS)
    assert {p.soundfont for p in default["train"]} == {"fluidr3"}
    assert [p.meta()["soundfont"] for p in mixed["train"]] == [p.soundfont for p in mixed["train"]]
    assert assign_train_soundfonts(default["train"], FONTS, 0) == mixed["train"]  # seeded
    assert assign_train_soundfonts(default["train"], FONTS, 1) != mixed["train"]


def test_shards_hold_one_soundfont_and_default_shards_are_unchanged() -> None:
    default = plan_corpus("small", 0)
    expected = [items[i : i + SHARD_SIZE] for items in default.values()
                for i in range(0, len(items), SHARD_SIZE)]  # the cut before soundfonts
    assert shards_of(default) == expected
    mixed = plan_corpus("small", 0, FONTS)
    shards = shards_of(mixed)
    assert all(len({p.soundfont for p in s}) == 1 and len(s) <= SHARD_SIZE for s in shards)
    assert sorted(p.id for s in shards for p in s) == sorted(
        p.id for items in mixed.values() for p in items)


def read_int16(path: Path) -> np.ndarray:
    return sf.read(path, dtype="int16")[0]


def test_build_renders_train_clips_with_the_drawn_soundfonts(tiny_corpus: Path,
                                                             tmp_path: Path) -> None:
    fonts = (*FONTS, "freepats")  # freepats plays through TiMidity++, the others FluidSynth
    out = tmp_path / "mixed"
    assert atri_main(["corpus", "build", str(out), "--size", "tiny", "--workers", "2",
                      "--train-soundfonts", ",".join(fonts)]) == 0
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["stamp"]["train_soundfonts"] == list(fonts)
    assert set(corpus["statistics"]["soundfonts"]["train"]) == set(fonts)
    assert corpus["statistics"]["soundfonts"]["test-xfont"] == {"timgm6mb": 36}
    for split in EVAL_SPLITS:  # evaluation clips exactly as in the FluidR3-only corpus
        assert (out / f"{split}.jsonl").read_text() == (tiny_corpus / f"{split}.jsonl").read_text()
        for record in read_manifest(out / f"{split}.jsonl").records[:3]:
            assert np.array_equal(read_int16(out / record.audio),
                                  read_int16(tiny_corpus / record.audio))
    plans = {p.id: p for p in plan_corpus("tiny", 0, fonts)["train"]}
    train = read_manifest(out / "train.jsonl")
    differ = 0
    for record in train:
        assert record.meta["soundfont"] == plans[record.id].soundfont
        mine, plain = read_int16(out / record.audio), read_int16(tiny_corpus / record.audio)
        assert np.abs(mine.astype(np.float64)).max() > 100  # something plays
        if record.meta["soundfont"] != "fluidr3":
            differ += not np.array_equal(mine, plain)
    assert differ == sum(r.meta["soundfont"] != "fluidr3" for r in train) > 60

    # the same clips from one worker: identical samples
    one = tmp_path / "one-worker"
    render_all({"train": list(plans.values())}, one, workers=1)
    for record in train:
        assert np.array_equal(read_int16(one / record.audio), read_int16(out / record.audio))


# --- val-xfont: the val clips in a soundfont no training clip hears ---------------------

@pytest.mark.parametrize(("name", "train", "message"), [
    ("timgm6mb", ("fluidr3",), "'timgm6mb' is refused: reserved for evaluation"),
    ("csound", ("fluidr3",), "'csound' is refused"),
    ("fluidr3", ("fluidr3",), "'fluidr3' also renders training clips"),
    ("opl3", ("fluidr3", "opl3"), "'opl3' also renders training clips"),
    ("nope", ("fluidr3",), "unknown soundfont 'nope'; choose among musescore, fluidr3mono, "
                           "opl3$"),
    ("freepats", ("fluidr3",), "'freepats' lacks applause, birdsong, choir"),
])
def test_bad_val_soundfonts_are_refused_by_name(name: str, train: tuple[str, ...],
                                                message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_val_soundfont(name, train)


def test_val_xfont_is_val_in_another_soundfont() -> None:
    default = plan_corpus("tiny", 0)
    plans = plan_corpus("tiny", 0, ("fluidr3", "musescore"), val_soundfont="opl3")
    assert list(plans) == [*default, "val-xfont"]
    assert plans["val"] == default["val"]
    copy = plans["val-xfont"]
    assert [p.id for p in copy] == [p.id.replace("va-", "vx-", 1) for p in default["val"]]
    assert {p.soundfont for p in copy} == {"opl3"} and {p.split for p in copy} == {"val-xfont"}
    assert [replace(p, id="", split="", soundfont="", cluster="") for p in copy] == [
        replace(p, id="", split="", soundfont="", cluster="") for p in default["val"]]


def test_cli_refuses_a_val_soundfont_that_trains(tmp_path: Path, capsys) -> None:
    out = tmp_path / "corpus"
    assert atri_main(["corpus", "build", str(out), "--size", "tiny", "--train-soundfonts",
                      "fluidr3,opl3", "--val-soundfont", "opl3"]) == 2
    assert "'opl3' also renders training clips" in capsys.readouterr().err
    assert not out.exists()


def copied_corpus(tiny_corpus: Path, tmp_path: Path, split: str) -> tuple[Path, Path, int]:
    """A copy of the tiny corpus, one clip of `split` and its mtime: a rebuild that renders
    `split` again changes the mtime."""
    out = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, out)
    audio = out / read_manifest(out / f"{split}.jsonl").records[0].audio
    return out, audio, audio.stat().st_mtime_ns


def test_val_xfont_is_added_to_a_built_corpus_and_taken_away(tiny_corpus: Path,
                                                             tmp_path: Path) -> None:
    out, train_audio, before = copied_corpus(tiny_corpus, tmp_path, "train")
    assert atri_main(["corpus", "build", str(out), "--size", "tiny", "--workers", "1",
                      "--val-soundfont", "opl3"]) == 0
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["stamp"]["val_soundfont"] == "opl3"
    assert train_audio.stat().st_mtime_ns == before  # only the new split was rendered
    val = read_manifest(out / "val.jsonl").records
    copy = read_manifest(out / "val-xfont.jsonl").records
    assert corpus["statistics"]["soundfonts"]["val-xfont"] == {"opl3": len(val)} == {"opl3": 48}
    assert (out / "val.jsonl").read_text() == (tiny_corpus / "val.jsonl").read_text()
    assert [r.captions for r in copy] == [r.captions for r in val]
    for mine, theirs in zip(copy[:5], val[:5], strict=True):
        assert mine.meta["soundfont"] == "opl3" and mine.audio.startswith("audio/val-xfont/")
        sound, plain = read_int16(out / mine.audio), read_int16(out / theirs.audio)
        assert np.abs(sound.astype(np.float64)).max() > 100 and not np.array_equal(sound, plain)

    # the corpus without it: the split's manifest goes, nothing else is rendered again
    assert atri_main(["corpus", "build", str(out), "--size", "tiny", "--workers", "1"]) == 0
    assert not (out / "val-xfont.jsonl").exists()
    assert "val_soundfont" not in json.loads((out / "corpus.json").read_text())["stamp"]
    assert train_audio.stat().st_mtime_ns == before


def test_changing_the_training_soundfonts_renders_only_train(tiny_corpus: Path,
                                                            tmp_path: Path) -> None:
    out, val_audio, before = copied_corpus(tiny_corpus, tmp_path, "val")
    fonts = ("fluidr3", "freepats")
    assert atri_main(["corpus", "build", str(out), "--size", "tiny", "--workers", "1",
                      "--train-soundfonts", ",".join(fonts)]) == 0
    assert val_audio.stat().st_mtime_ns == before  # val, test, test-xfont: not rendered again
    assert json.loads((out / "corpus.json").read_text())["stamp"]["train_soundfonts"] == list(fonts)
    train = read_manifest(out / "train.jsonl").records
    plans = {p.id: p for p in plan_corpus("tiny", 0, fonts)["train"]}
    assert [r.meta["soundfont"] for r in train] == [plans[r.id].soundfont for r in train]
    drawn = [r for r in train if r.meta["soundfont"] == "freepats"]
    assert drawn and not np.array_equal(read_int16(out / drawn[0].audio),
                                        read_int16(tiny_corpus / drawn[0].audio))

    # back to FluidR3 only: train is the default corpus's again, sample for sample
    assert atri_main(["corpus", "build", str(out), "--size", "tiny", "--workers", "1"]) == 0
    assert val_audio.stat().st_mtime_ns == before
    assert (out / "train.jsonl").read_text() == (tiny_corpus / "train.jsonl").read_text()
    for record in drawn[:3]:
        assert np.array_equal(read_int16(out / record.audio),
                              read_int16(tiny_corpus / record.audio))
