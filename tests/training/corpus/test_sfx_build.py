"""The real-recordings corpus builder on a small fixture tree written here: a few
packages' worth of files laid out like their real paths, with tables of their own (an
exact duplicate across packages, take groups, a silent file, a long loop, WavPack)."""

import json
import os
import subprocess
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from atri.commands.corpus import main as corpus_main
from atri.training.corpus.render import SAMPLE_RATE
from atri.training.corpus.sfx import build, mixtures
from atri.training.corpus.sfx.audio import ffmpeg_exe, load_source, write_flac
from atri.training.corpus.sfx.splits import SPLITS
from atri.training.data.manifest import read_manifest
from atri.training.languages import LANGS

MT = "usr/share/games/minetest/sounds/"
WN = "usr/share/games/wesnoth/1.16/data/core/sounds/"
TW = "usr/share/games/teeworlds/data/audio/"
LU = "usr/share/games/lugaru/Data/Sounds/"
LM = "usr/share/lmms/samples/instruments/"
SC = "usr/share/scratch/Media/Sounds/"
QA = "usr/share/qabcs/abcs/"
AR = "usr/share/games/ardentryst/Sounds/"
XPKG = ("lugaru-data",)
ZEROSHOT = ("cow_moo",)
MIX_COUNTS = {"train": (6, 3), "val": (2, 1), "test": (2, 1)}

# package -> (table rows, files: relpath -> how to make it)
FIXTURE: dict[str, tuple[list[str], dict[str, str]]] = {
    "minetest-data": (
        [f"{MT}default_sand_footstep*\tfootsteps\tmaterial=sand\t",
         f"{MT}default_snow_footstep*\tfootsteps\tmaterial=snow\t",
         f"{MT}default_break_glass*\tglass_break\t-\t",
         f"{MT}default_dig_*\tdigging\tmaterial=dirt\t",
         f"{MT}default_water_flow.ogg\tstream\t-\tlong loop",
         f"{MT}default_place_node*\t-\t-\tui: a click"],
        {**{f"{MT}default_sand_footstep.{i}.ogg": "noise" for i in (1, 2, 3)},
         **{f"{MT}default_snow_footstep.{i}.ogg": "noise" for i in (1, 2)},
         **{f"{MT}default_break_glass.{i}.ogg": "noise" for i in (1, 2, 3)},
         **{f"{MT}default_dig_{k}.ogg": "noise" for k in ("crumbly", "choppy", "cracky", "snappy")},
         f"{MT}default_water_flow.ogg": "long", f"{MT}default_place_node.1.ogg": "noise"},
    ),
    "wesnoth-1.16-data": (
        [f"{WN}cow*\tcow_moo\t-\t", f"{WN}ambient/campfire*\tfire_crackling\t-\t",
         f"{WN}ambient/rain*\train\t-\t", f"{WN}ambient/wind*\twind\t-\t",
         f"{WN}dog-*\tdog_bark\t-\t", f"{WN}sword-*\tsword_clash\t-\t",
         f"{WN}glass-*\tglass_break\t-\t", f"{WN}door-*\tdoor_open\t-\t",
         f"{WN}horse-*\thorse_gallop\t-\t", f"{WN}**\t-\t-\tmusic: everything else"],
        {**{f"{WN}cow-{k}.ogg": "noise" for k in ("a", "b", "moo", "low", "calf", "bull")},
         **{f"{WN}ambient/{k}.ogg": "noise" for k in ("campfire", "rain", "rain-heavy", "wind",
                                                       "wind-gusts", "campfire-small")},
         **{f"{WN}dog-{k}.wav": "noise" for k in ("bark1", "bark2", "growl", "yelp", "howl")},
         **{f"{WN}sword-{k}.ogg": "noise" for k in ("clash", "hit", "ring", "parry", "block",
                                                     "slash", "clang", "swing")},
         **{f"{WN}door-{k}.ogg": "noise" for k in ("open", "creak", "wood", "iron", "gate")},
         **{f"{WN}horse-{k}.wav": "stereo48k" for k in ("canter", "gallop", "trot")},
         f"{WN}glass-break.wav": "dup", f"{WN}theme.ogg": "noise"},
    ),
    "teeworlds-data": (
        [f"{TW}foley_body_impact*\tthud\t-\t", f"{TW}wp_gun_fire*\tgunshot\t-\t",
         f"{TW}glass_break.wav\tglass_break\t-\t", f"{TW}hum.wav\telectricity\t-\t"],
        {**{f"{TW}foley_body_impact-0{i}.wv": "wavpack" for i in (1, 2, 3)},
         **{f"{TW}wp_gun_fire-0{i}.wav": "noise" for i in (1, 2, 3)},
         f"{TW}glass_break.wav": "dup", f"{TW}hum.wav": "silent"},
    ),
    "lugaru-data": (
        [f"{LU}FootStepSnow*\tfootsteps\tmaterial=snow\t", f"{LU}Fire*\tfire_crackling\t-\t",
         f"{LU}Cow*\tcow_moo\t-\t"],
        {f"{LU}FootStepSnow1.ogg": "noise", f"{LU}FootStepSnow2.ogg": "noise",
         f"{LU}Fire.ogg": "noise", f"{LU}Cow.ogg": "noise"},
    ),
    "lmms-common": (
        [f"{LM}violin*\tviolin\t-\t", f"{LM}piano*\tpiano\t-\t"],
        {**{f"{LM}violin_{k}0{i}.ogg": "tone" for k in ("fingered", "bowed") for i in (1, 2)},
         **{f"{LM}piano_{k}.ogg": "tone" for k in ("soft", "hard", "mid", "bright")}},
    ),
    "scratch": (  # wav and mp3 side by side, a folder name with a space
        [f"{SC}Animal/Dog?.wav\tdog_bark\t-\t", f"{SC}Human/Footsteps-?.*\tfootsteps\t-\t",
         f"{SC}Music Loops/*\t-\t-\tmusic: loops"],
        {f"{SC}Animal/Dog1.wav": "noise", f"{SC}Animal/Dog2.wav": "noise",
         f"{SC}Human/Footsteps-1.wav": "noise", f"{SC}Human/Footsteps-2.mp3": "mp3",
         f"{SC}Music Loops/Drum.mp3": "mp3"},
    ),
    "qabcs-data": (  # one noise per word; the per-language word folders are speech
        [f"{QA}all/noises/dog.ogg\tdog_bark\t-\t", f"{QA}*/sounds/*\t-\t-\tspeech: words"],
        {f"{QA}all/noises/dog.ogg": "noise", f"{QA}en/sounds/words/dog.ogg": "noise"},
    ),
    "ardentryst": (  # PYR/ ships byte-identical copies of NYX/'s steps
        [f"{AR}NYX/NYX_STEP_SNOW?.ogg\tfootsteps\tmaterial=snow\t",
         f"{AR}PYR/PYR_STEP_*\t-\t-\tduplicate: NYX's steps"],
        {f"{AR}NYX/NYX_STEP_SNOW{i}.ogg": "noise" for i in (1, 2)} | {
            f"{AR}PYR/PYR_STEP_SNOW1.ogg": "noise"},
    ),
}


def _sound(kind: str, name: str) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(zlib.crc32(name.encode()) if kind != "dup" else 7)
    sr = 48000 if kind == "stereo48k" else 22050
    n = int((12.0 if kind == "long" else rng.uniform(0.4, 1.2)) * sr)
    if kind == "silent":
        return np.zeros(n, dtype=np.float32), sr
    t = np.arange(n) / sr
    if kind == "tone":
        wave = np.sin(2 * np.pi * rng.uniform(200, 800) * t) * np.exp(-2 * t)
    else:
        wave = rng.standard_normal(n) * np.exp(-rng.uniform(0.5, 4) * t)
    wave = (0.3 * wave / np.abs(wave).max()).astype(np.float32)
    return (np.stack([wave, wave[::-1]], axis=1) if kind == "stereo48k" else wave), sr


def write_fixture(base: Path) -> tuple[Path, Path]:
    root, tables = base / "root", base / "tables"
    tables.mkdir(parents=True)
    for package, (rows, files) in FIXTURE.items():
        (tables / f"{package}.tsv").write_text("# fixture\n" + "\n".join(rows) + "\n")
        for rel, kind in files.items():
            path = root / package / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            wave, sr = _sound(kind, rel)
            if kind in ("wavpack", "mp3"):  # libsndfile may not write them: ffmpeg can
                wav = path.with_suffix(".tmp.wav")
                sf.write(wav, wave, sr)
                codec = "wavpack" if kind == "wavpack" else "libmp3lame"
                subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(wav), "-c:a", codec,
                                "-y", str(path)], check=True)
                wav.unlink()
            else:
                sf.write(path, wave, sr)
    return root, tables


@pytest.fixture(scope="module")
def fixture_tree(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("sfx"))


@pytest.fixture(scope="module")
def held_out():
    with pytest.MonkeyPatch.context() as mp:  # the CLI builds with the module constants
        mp.setattr(build, "XPKG", XPKG)
        mp.setattr(build, "ZEROSHOT", ZEROSHOT)
        mp.setattr(mixtures, "COUNTS", MIX_COUNTS)
        yield


@pytest.fixture(scope="module")
def corpus(fixture_tree, held_out, tmp_path_factory):
    root, tables = fixture_tree
    out = tmp_path_factory.mktemp("corpus")
    stats = build.build_sfx(out, root, table_dir=tables, seed=3, workers=2)
    return out, stats


def _manifests(out: Path) -> dict:
    return {s: read_manifest(out / f"{s}.jsonl") for s in SPLITS}


def test_splits_keep_their_promises(corpus):
    out, stats = corpus
    manifests = _manifests(out)
    where: dict[str, set[str]] = defaultdict(set)
    for split, manifest in manifests.items():
        real = [r for r in manifest if "package" in r.meta]
        assert real, f"{split} has no recordings"
        for r in real:
            where[r.meta["group"]].add(split)
            assert (r.meta["package"] in XPKG) == (split == "test-xpkg") or split == "test-zeroshot"
            assert (r.meta["concept"] in ZEROSHOT) == (split == "test-zeroshot")
    assert all(len(s) == 1 for s in where.values()), where
    sword = {r.meta["group"] for r in manifests["train"]
             if r.meta.get("concept") == "sword_clash" and "group" in r.meta}
    assert sword, "sword-* files are groups of their own, some in train"
    sand = [r for m in manifests.values() for r in m if r.meta.get("attrs") == "material=sand"]
    assert len({r.meta["group"] for r in sand}) == 1 and len(sand) == 3  # one take group
    assert stats["drops"]["silent"] == 1 and stats["drops"]["duplicate"] == 1
    assert sum(stats["clips"].values()) + sum(stats["drops"].values()) == stats["sources"]
    assert stats["drops"]["excluded:ui"] == 1 and stats["drops"]["excluded:music"] == 2
    assert stats["drops"]["excluded:speech"] == 1 and stats["drops"]["excluded:duplicate"] == 1


def test_records_carry_provenance_captions_and_clip_format(corpus):
    out, _ = corpus
    manifests = _manifests(out)
    for split, manifest in manifests.items():
        for r in manifest:
            assert set(r.captions) == set(LANGS)
            assert r.n_captions() == (4 if split == "train" else 2)
            info = sf.info(manifest.audio_path(r))
            assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
            assert info.duration <= 10.0 + 1e-9
    records = {r.meta["path"]: r for m in manifests.values() for r in m if "path" in r.meta}
    flow = records[f"{MT}default_water_flow.ogg"]
    assert flow.meta["cropped_from_seconds"] == pytest.approx(12.0, abs=0.01)
    assert flow.meta["seconds"] == pytest.approx(10.0)
    assert flow.meta["licence"] == "CC-BY-SA-3.0" and "Minetest" in flow.meta["attribution"]
    assert flow.meta["filename_label"] == "water flow"
    assert (f"{WN}glass-break.wav" in records) + (f"{TW}glass_break.wav" in records) == 1


def test_scratch_qabcs_ardentryst_layouts(corpus):
    """mp3 decodes; wav and mp3 takes of one name are one group; each package's licence
    and (for files with their own holders) attribution reach the record."""
    out, _ = corpus
    records = {r.meta["path"]: r for m in _manifests(out).values() for r in m if "path" in r.meta}
    steps = [records[f"{SC}Human/Footsteps-1.wav"], records[f"{SC}Human/Footsteps-2.mp3"]]
    assert steps[0].meta["group"] == steps[1].meta["group"]
    assert steps[1].meta["seconds"] > 0.3 and steps[1].meta["licence"] == "CC-BY-SA-3.0"
    assert records[f"{QA}all/noises/dog.ogg"].meta["licence"] == "GPL-3+"
    assert f"{QA}en/sounds/words/dog.ogg" not in records
    snow = records[f"{AR}NYX/NYX_STEP_SNOW1.ogg"]
    assert snow.meta["attr_material"] == "snow" and "Jordan Trudgett" in snow.meta["attribution"]
    assert f"{AR}PYR/PYR_STEP_SNOW1.ogg" not in records


def test_mixtures_stay_in_their_split(corpus):
    out, stats = corpus
    manifests = _manifests(out)
    ids = {s: {r.id for r in m} for s, m in manifests.items()}
    for split, manifest in manifests.items():
        for r in manifest:
            if r.id.startswith("mix-"):
                assert {r.meta["main"], r.meta["background"]} <= ids[split]
                assert r.meta["concept"] != r.meta["background_concept"]
                assert 6.0 <= r.meta["level_db"] <= 15.0
            elif r.id.startswith("mel-"):
                assert r.meta["background"] in ids[split]
                assert r.meta["background_concept"] in mixtures.AMBIENT
    assert stats["mixtures"]["train"]["pair"] == MIX_COUNTS["train"][0]
    assert any(r.id.startswith("mel-") for r in manifests["train"])


def test_same_corpus_for_any_worker_count_via_the_cli(corpus, fixture_tree, tmp_path, capsys):
    out, _ = corpus
    root, tables = fixture_tree
    argv = ["build-sfx", str(tmp_path), "--root", str(root), "--tables", str(tables),
            "--seed", "3", "--workers", "1"]
    assert corpus_main(argv) == 0
    assert "test-zeroshot" in capsys.readouterr().out
    for split in SPLITS:
        assert len(read_manifest(tmp_path / f"{split}.jsonl")) > 0  # valid, audio present
        assert (tmp_path / f"{split}.jsonl").read_text() == (out / f"{split}.jsonl").read_text()
    flacs = sorted(p.relative_to(out) for p in (out / "audio").rglob("*.flac"))
    assert flacs == sorted(p.relative_to(tmp_path) for p in (tmp_path / "audio").rglob("*.flac"))
    for rel in flacs:
        assert np.array_equal(sf.read(out / rel, dtype="int16")[0],
                              sf.read(tmp_path / rel, dtype="int16")[0]), rel
    stamp = json.loads((tmp_path / "corpus.json").read_text())["stamp"]
    assert corpus_main(argv) == 0  # finished: the second run only reads corpus.json
    assert json.loads((tmp_path / "corpus.json").read_text())["stamp"] == stamp


def _meaning(record) -> tuple[str, str]:
    return record.meta["concept"], record.meta["attrs"]


def test_test_split_recordings_of_one_meaning_share_captions(corpus, fixture_tree, tmp_path):
    """Default (per-meaning): in the test splits every recording of one concept and
    attributes carries the same captions, so a query counts them all relevant; per-clip
    (builder version 5) draws them per recording. Train and val are the same either way."""
    out, _ = corpus
    root, tables = fixture_tree
    per_clip = tmp_path / "per-clip"
    build.build_sfx(per_clip, root, table_dir=tables, seed=3, workers=1, eval_captions="per-clip")
    shared, own = _manifests(out), _manifests(per_clip)
    for split in ("train", "val"):
        assert (out / f"{split}.jsonl").read_text() == (per_clip / f"{split}.jsonl").read_text()
    several = 0
    for split in ("test", "test-xpkg", "test-zeroshot"):
        assert [r.id for r in shared[split]] == [r.id for r in own[split]]
        by_meaning: dict[tuple[str, str], list] = defaultdict(list)
        for r in shared[split]:
            if "package" in r.meta:
                by_meaning[_meaning(r)].append(r.captions)
        for meaning, captions in by_meaning.items():
            assert all(c == captions[0] for c in captions), (split, meaning)
            several += len(captions) > 1
        assert len({json.dumps(c[0]) for c in by_meaning.values()}) == len(by_meaning)
    assert several, "the fixture must hold test recordings of one meaning"
    cows = {json.dumps(r.captions) for r in own["test-zeroshot"]
            if r.meta.get("concept") == "cow_moo"}
    assert len(cows) > 1, "per-clip: recordings of one meaning draw their own captions"
    stamps = [json.loads((d / "corpus.json").read_text())["stamp"] for d in (out, per_clip)]
    assert [s["eval_captions"] for s in stamps] == ["per-meaning", "per-clip"]


def test_an_unknown_caption_rule_is_refused_before_decoding(fixture_tree, tmp_path):
    root, tables = fixture_tree
    with pytest.raises(ValueError, match="per-sentence"):
        build.build_sfx(tmp_path, root, table_dir=tables, eval_captions="per-sentence")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("row", "message"), [
    ("cow*\tmoose_call\t-\t", "unknown concept id 'moose_call'"),
    ("cow*\t-\t-\tboring", "exclusion reason 'boring'"),
])
def test_a_bad_table_is_exit_2_naming_the_line(fixture_tree, tmp_path, capsys, row, message):
    root, tables = fixture_tree
    bad = tmp_path / "tables"
    bad.mkdir()
    for table in tables.glob("*.tsv"):
        (bad / table.name).write_text(table.read_text())
    table = "wesnoth-1.16-data.tsv"
    (bad / table).write_text(f"{WN}{row}\n" + (tables / table).read_text())
    argv = ["build-sfx", str(tmp_path / "out"), "--root", str(root), "--tables", str(bad)]
    assert corpus_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "wesnoth-1.16-data.tsv:1" in err


def test_an_undecodable_file_is_named(fixture_tree, tmp_path, capsys):
    root, tables = fixture_tree
    broken = tmp_path / "root"
    (broken / "lmms-common" / LM).mkdir(parents=True)
    (broken / "lmms-common" / LM / "violin_x.ogg").write_bytes(b"OggS not really")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "lmms-common.tsv").write_text((tables / "lmms-common.tsv").read_text())
    argv = ["build-sfx", str(tmp_path / "out"), "--root", str(broken),
            "--tables", str(tmp_path / "t"), "--workers", "1"]
    assert corpus_main(argv) == 2
    assert "violin_x.ogg" in capsys.readouterr().err


@pytest.mark.slow
def test_real_corpus_builds(tmp_path):
    """The real corpus from the real packages (fetched and extracted unless present)."""
    assert corpus_main(["build-sfx", str(tmp_path), "--workers", "2"]) == 0
    counts = {s: len(read_manifest(tmp_path / f"{s}.jsonl")) for s in SPLITS}
    assert counts["train"] > 1000 and min(counts.values()) > 50, counts


def test_an_ogg_stream_in_a_wave_wrapper_decodes(tmp_path):
    """lmms ships .ogg files that are RIFF/WAVE around an Ogg stream (Vorbis ACM tag 0x674F)."""
    ogg = tmp_path / "plain.ogg"
    wave, sr = _sound("noise", "wrapped")
    sf.write(ogg, wave, sr)
    fmt = (0x674F).to_bytes(2, "little") + (1).to_bytes(2, "little") + sr.to_bytes(4, "little")
    fmt += bytes(8)
    data = ogg.read_bytes()
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    body += b"data" + len(data).to_bytes(4, "little") + data + bytes(len(data) & 1)
    wrapped = tmp_path / "kick04.ogg"
    wrapped.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    decoded, _ = load_source(wrapped)
    assert np.array_equal(decoded, load_source(ogg)[0])


def test_a_rebuild_keeps_unchanged_clips_untouched(tmp_path):
    """Same samples: the file (and its mtime, the feature cache's key) stays; other samples:
    rewritten."""
    path = tmp_path / "clip.flac"
    samples = (np.sin(np.arange(4410) / 7.0) * 10000).astype(np.int16)
    write_flac(path, samples)
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
    write_flac(path, samples)
    assert path.stat().st_mtime_ns == stamp - 10**9
    write_flac(path, samples // 2)
    assert path.stat().st_mtime_ns != stamp - 10**9
    assert np.array_equal(sf.read(str(path), dtype="int16")[0], samples // 2)


def test_an_mp3_without_a_xing_header_decodes_whole(tmp_path):
    """libsndfile's MP3 frame count is a bitrate estimate without a Xing header (scratch's
    Cat.mp3 announces twice its length; a VBR file stops early): MP3 goes to ffmpeg."""
    wav, mp3 = tmp_path / "burst.wav", tmp_path / "Cat.mp3"
    wave = np.zeros(SAMPLE_RATE, dtype=np.float32)  # 1 s: a loud 0.1 s burst, then silence
    wave[: SAMPLE_RATE // 10] = _sound("noise", "burst")[0][: SAMPLE_RATE // 10]
    sf.write(wav, wave, SAMPLE_RATE)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(wav), "-c:a", "libmp3lame", "-q:a", "4",
                    "-write_xing", "0", "-y", str(mp3)], check=True)
    decoded, _ = load_source(mp3)
    assert abs(len(decoded) - SAMPLE_RATE) < 0.05 * SAMPLE_RATE  # the encoder pads a little
