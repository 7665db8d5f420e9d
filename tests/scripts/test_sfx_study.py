"""scripts/sfx_study.py --manifests-only: the joint manifests a default's run reads,
rebuilt from the two corpora without training (real manifests, real audio files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from atri.training.data.manifest import read_manifest, write_manifest


@pytest.fixture
def two_corpora(tiny_corpus: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A demo corpus (the tiny one) and a stand-in real-recordings corpus made of its clips
    under the five real split names, with relative audio paths as build-sfx writes them."""
    sfx = tmp_path / "sfx"
    sfx.mkdir()
    (sfx / "audio").symlink_to(tiny_corpus / "audio", target_is_directory=True)
    records = read_manifest(tiny_corpus / "test.jsonl").records
    splits = {"train": records[:6], "val": records[6:9], "test": records[9:12],
              "test-xpkg": records[12:14], "test-zeroshot": records[14:16]}
    for split, part in splits.items():
        for r in part:
            r.id = f"sfx-{r.id}"
        write_manifest(sfx / f"{split}.jsonl", part)
    return tiny_corpus, sfx


def fonts_copy(tiny: Path, folder: Path, soundfonts: tuple[str, ...]) -> list:
    """A stand-in for the demo corpus built with --train-soundfonts: the tiny corpus's
    manifests, its training clips labelled with `soundfonts` in turn."""
    folder.mkdir()
    (folder / "audio").symlink_to(tiny / "audio", target_is_directory=True)
    for split in ("train", "val", "test", "test-xfont"):
        (folder / f"{split}.jsonl").write_text((tiny / f"{split}.jsonl").read_text())
    drawn = read_manifest(folder / "train.jsonl").records
    for i, r in enumerate(drawn):
        r.meta["soundfont"] = soundfonts[i % len(soundfonts)]
    write_manifest(folder / "train.jsonl", drawn)
    return drawn


def test_manifests_only_writes_the_joint_data_and_trains_nothing(load_script, two_corpora,
                                                                 tmp_path):
    study = load_script("sfx_study")
    demo, sfx = two_corpora
    out = tmp_path / "study"
    assert study.main(["--sfx", str(sfx), "--demo", str(demo), "--out", str(out),
                       "--arms", "joint-r1,joint-r2", "--manifests-only"]) == 0

    demo_train = read_manifest(demo / "train.jsonl").records
    sfx_train = read_manifest(sfx / "train.jsonl").records
    joint = read_manifest(out / "joint-r1" / "train.jsonl").records  # audio must exist
    assert [r.id for r in joint] == [r.id for r in demo_train] + [r.id for r in sfx_train]
    assert all(Path(r.audio).is_absolute() for r in joint)
    twice = read_manifest(out / "joint-r2" / "train.jsonl").records
    assert len(twice) == len(demo_train) + 2 * len(sfx_train)
    assert len({r.id for r in twice}) == len(twice)  # repeats under their own ids
    val = read_manifest(out / "joint-r1" / "val.jsonl").records
    assert len(val) == len(read_manifest(demo / "val.jsonl")) + 3
    for name in ("sfx-test", "sfx-test-xpkg", "sfx-test-zeroshot", "demo-test",
                 "demo-test-xfont"):
        assert read_manifest(out / "manifests" / f"{name}.jsonl").records
    assert not (out / "joint-r1" / "run").exists() and not (out / "results.json").exists()


def test_the_fonts_arm_adds_the_first_n_clips_in_other_soundfonts(load_script, two_corpora,
                                                                   tmp_path):
    """--fonts is the demo corpus rendered with other soundfonts (here the tiny corpus
    again, standing in): its first --n-fonts training clips join under their own ids."""
    study = load_script("sfx_study")
    demo, sfx = two_corpora
    fonts_copy(demo, tmp_path / "fonts", ("musescore",))
    out = tmp_path / "study"
    assert study.main(["--sfx", str(sfx), "--demo", str(demo), "--fonts", str(tmp_path / "fonts"),
                       "--n-fonts", "5", "--out", str(out), "--arms", "joint-fonts-r1",
                       "--manifests-only"]) == 0
    demo_train = read_manifest(demo / "train.jsonl").records
    joint = read_manifest(out / "joint-fonts-r1" / "train.jsonl").records
    assert len(joint) == len(demo_train) + 5 + 6
    fonts = joint[len(demo_train):len(demo_train) + 5]
    assert [r.id.rsplit(".", 1)[0] for r in fonts] == [r.id for r in demo_train[:5]]
    assert [r.captions for r in fonts] == [r.captions for r in demo_train[:5]]
    assert len({r.id for r in joint}) == len(joint)
    with pytest.raises(SystemExit):
        study.main(["--sfx", str(sfx), "--demo", str(demo), "--fonts", str(demo),
                    "--n-fonts", "0", "--out", str(tmp_path / "s0"), "--arms",
                    "joint-fonts-r1", "--manifests-only"])


def test_an_unknown_arm_is_named(load_script, two_corpora, tmp_path, capsys):
    study = load_script("sfx_study")
    demo, sfx = two_corpora
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--sfx", str(sfx), "--demo", str(demo), "--out", str(tmp_path / "s"),
                    "--arms", "joint-r9", "--manifests-only"])
    assert exit_info.value.code == 2
    assert "joint-r9" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_fonts_can_leave_out_a_soundfont_and_validation_can_hear_one(load_script, two_corpora,
                                                                      tmp_path):
    """--fonts-soundfonts keeps only the --fonts clips rendered with the named soundfonts;
    --val-xfont adds the demo corpus's val-xfont split to the arm's validation data."""
    study = load_script("sfx_study")
    tiny, sfx = two_corpora
    demo, fonts = tmp_path / "demo", tmp_path / "fonts"
    fonts_copy(tiny, demo, ("fluidr3",))
    drawn = fonts_copy(tiny, fonts, ("musescore", "opl3", "fluidr3mono"))
    args = ["--sfx", str(sfx), "--demo", str(demo), "--fonts", str(fonts), "--n-fonts", "9",
            "--fonts-soundfonts", "musescore,fluidr3mono", "--arms", "joint-fonts-r1",
            "--manifests-only", "--val-xfont"]
    with pytest.raises(SystemExit):  # no val-xfont split yet: named, nothing written
        study.main([*args, "--out", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()
    copy = read_manifest(tiny / "test-xfont.jsonl").records[:4]
    for r in copy:
        r.id = r.id.replace("xf-", "vx-", 1)
    write_manifest(demo / "val-xfont.jsonl", copy)

    out = tmp_path / "study"
    assert study.main([*args, "--out", str(out)]) == 0
    demo_train = read_manifest(demo / "train.jsonl").records
    joint = read_manifest(out / "joint-fonts-r1" / "train.jsonl").records
    kept = joint[len(demo_train):len(joint) - 6]
    assert [r.id for r in kept] == [f"{r.id}.{r.meta['soundfont']}" for r in drawn[:9]
                                    if r.meta["soundfont"] != "opl3"]
    val = read_manifest(out / "joint-fonts-r1" / "val.jsonl").records
    demo_val = read_manifest(demo / "val.jsonl").records
    assert [r.id for r in val] == ([r.id for r in demo_val] + [r.id for r in copy]
                                   + [f"sfx-{r.id}" for r in
                                      read_manifest(tiny / "test.jsonl").records[6:9]])
    assert all(Path(r.audio).is_file() for r in val)


def test_several_fonts_corpora_add_their_clips_but_never_fluidr3_or_twice(load_script,
                                                                          two_corpora, tmp_path):
    """Two --fonts corpora (e.g. one built with freepats, whose clips it lacks stay FluidR3):
    both add their clips; FluidR3 renderings, demo/train's own, are left out; a soundfont's
    clips given twice are refused by name, with nothing written."""
    study = load_script("sfx_study")
    demo, sfx = two_corpora
    first = fonts_copy(demo, tmp_path / "sf", ("musescore", "opl3"))
    second = fonts_copy(demo, tmp_path / "fp", ("freepats", "fluidr3"))
    args = ["--sfx", str(sfx), "--demo", str(demo), "--n-fonts", "6", "--arms",
            "joint-fonts-r1", "--manifests-only"]
    out = tmp_path / "study"
    assert study.main([*args, "--fonts", str(tmp_path / "sf"), "--fonts", str(tmp_path / "fp"),
                       "--out", str(out)]) == 0
    demo_train = read_manifest(demo / "train.jsonl").records
    joint = read_manifest(out / "joint-fonts-r1" / "train.jsonl").records
    added = [r.id for r in joint[len(demo_train):len(joint) - 6]]
    assert added == ([f"{r.id}.{r.meta['soundfont']}" for r in first[:6]]
                     + [f"{r.id}.freepats" for r in second[:6:2]])
    with pytest.raises(SystemExit):
        study.main([*args, "--fonts", str(tmp_path / "sf"), "--fonts", str(tmp_path / "sf"),
                    "--out", str(tmp_path / "twice")])
    assert not (tmp_path / "twice").exists()
