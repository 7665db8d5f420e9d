import json

import numpy as np
import pytest
import soundfile as sf

from atri.cli import main as atri_main
from atri.training.corpus.build import SPLITS, build, plan_corpus
from atri.training.corpus.render import CLIP_SECONDS, SAMPLE_RATE, Renderer, background_gain
from atri.training.data.manifest import read_manifest


def test_manifests_are_valid_and_audio_is_real(tiny_corpus):
    for split in SPLITS:
        manifest = read_manifest(tiny_corpus / f"{split}.jsonl")  # strict: audio must exist
        assert len(manifest) > 30
        for record in manifest.records[:5]:
            info = sf.info(manifest.audio_path(record))
            assert (info.format, info.samplerate, info.channels) == ("FLAC", SAMPLE_RATE, 1)
            assert info.duration == pytest.approx(CLIP_SECONDS)
            wave, _ = sf.read(manifest.audio_path(record))
            assert np.sqrt(np.mean(wave**2)) > 1e-4  # something plays


def test_same_seed_same_samples_whatever_the_worker_count(tiny_corpus, tmp_path):
    build(tmp_path, size="tiny", seed=0, workers=1)
    for split in SPLITS:
        ours = (tmp_path / f"{split}.jsonl").read_text()
        assert ours == (tiny_corpus / f"{split}.jsonl").read_text()
    for path in sorted((tiny_corpus / "audio").rglob("*.flac")):
        a, _ = sf.read(path, dtype="int16")
        b, _ = sf.read(tmp_path / path.relative_to(tiny_corpus), dtype="int16")
        assert np.array_equal(a, b), path.name


def test_loud_clips_are_louder_than_soft_ones(tiny_corpus):
    manifest = read_manifest(tiny_corpus / "train.jsonl")
    levels = {"soft": [], "loud": []}
    for record in manifest:
        if record.meta["background"] == "none":
            wave, _ = sf.read(manifest.audio_path(record))
            levels[record.meta["loudness"]].append(np.sqrt(np.mean(wave**2)))
    assert np.median(levels["loud"]) > 4 * np.median(levels["soft"])


def test_background_sits_6_to_12_db_under_the_melody():
    plans = [p for p in plan_corpus("tiny", 0)["train"] if p.attrs.background != "none"][:4]
    for plan in plans:
        melody = Renderer("fluidr3")  # fresh synths: the same events give the same samples
        alone = melody.melody(plan)
        melody.close()
        full = Renderer("fluidr3")
        mixed = full.render(plan)
        full.close()
        bg = mixed - alone
        ratio_db = 20 * np.log10(np.sqrt(np.mean(alone**2)) / np.sqrt(np.mean(bg**2)))
        assert 6.0 - 0.2 <= ratio_db <= 12.0 + 0.2, (plan.attrs.background, ratio_db)
        assert ratio_db == pytest.approx(plan.snr_db, abs=0.2)


def test_background_gain_formula():
    melody, background = np.full(100, 0.2), np.full(100, 0.05)
    gain = background_gain(melody, background, 6.0)
    assert 20 * np.log10(0.2 / (0.05 * gain)) == pytest.approx(6.0)
    assert background_gain(melody, np.zeros(100), 6.0) == 0.0


def test_cli_prints_counts_and_skips_a_finished_corpus(tiny_corpus, capsys):
    stamp = (tiny_corpus / "corpus.json").stat().st_mtime_ns
    assert atri_main(["corpus", "build", str(tiny_corpus), "--size", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "instrument=flute" in out and "captions/zho" in out and "test-xfont" in out
    assert (tiny_corpus / "corpus.json").stat().st_mtime_ns == stamp
    stats = json.loads((tiny_corpus / "corpus.json").read_text())["statistics"]
    assert stats["clips"]["train"] == 120


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    assert atri_main(["corpus", "build", str(tmp_path), "--size", "huge"]) == 2
    assert atri_main(["corpus", "build", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_a_version_1_corpus_gets_only_test_unseen(tiny_corpus, tmp_path):
    """Upgrading a corpus finished by builder version 1 renders test-unseen alone: the
    other clips (and the feature caches keyed on them) stay untouched."""
    import shutil

    out = tmp_path / "c"
    shutil.copytree(tiny_corpus, out)
    shutil.rmtree(out / "audio" / "test-unseen")
    (out / "test-unseen.jsonl").unlink()
    done = json.loads((out / "corpus.json").read_text())
    done["stamp"]["builder_version"] = 1
    (out / "corpus.json").write_text(json.dumps(done))
    before = {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.flac")}
    build(out, size="tiny", seed=0, workers=1)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    for split in SPLITS:
        assert (out / f"{split}.jsonl").read_text() == (tiny_corpus / f"{split}.jsonl").read_text()
    assert len(list((out / "audio" / "test-unseen").glob("*.flac"))) == 36
    assert json.loads((out / "corpus.json").read_text())["stamp"]["builder_version"] == 2
