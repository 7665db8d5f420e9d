"""scripts/sfx_paired.py: per-query T2A differences of two checkpoints on real files, whose
averages are exactly `atri eval`'s and whose interval holds the difference."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def paired(load_script):
    return load_script("sfx_paired")


def test_two_checkpoints_on_real_files(paired, tiny_corpus, make_checkpoint, shared_cache,
                                       tmp_path):
    from atri.commands.eval import main as atri_eval

    val = tiny_corpus / "val.jsonl"
    checkpoints = {"a": str(make_checkpoint(5)), "b": str(make_checkpoint(6))}
    out = tmp_path / "paired.json"
    # two languages keep the text encoder's work small; the averages are over them
    assert paired.main(["--a", checkpoints["a"], "--b", checkpoints["b"], "--manifest",
                        str(val), "--langs", "eng", "jpn", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["splits"][str(val)]
    for name, checkpoint in checkpoints.items():
        assert atri_eval(["--checkpoint", checkpoint, "--manifest", str(val), "--langs", "eng",
                          "jpn", "--out", str(tmp_path / name), "--tsne-clips", "0"]) == 0
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())["t2a"]["avg"]
        for k in (1, 10):
            assert row[f"R@{k}"][name] == pytest.approx(metrics[f"R@{k}"])
    for k in (1, 10):
        r = row[f"R@{k}"]
        assert r["diff"] == pytest.approx(r["a"] - r["b"])
        assert r["ci95"][0] <= r["ci95"][1]


def test_a_clear_difference_lies_inside_an_interval_that_excludes_0(paired, tiny_corpus):
    """Model A embeds each clip where its captions are (every query finds its clip first),
    model B at random: the difference is large and its interval clear of 0."""
    from atri.training.data.manifest import read_manifest
    from atri.training.evaluation.embed import ManifestEmbeddings, manifest_captions

    manifest = read_manifest(tiny_corpus / "val.jsonl")
    captions, present = manifest_captions(manifest, ["eng", "jpn"])
    rng = np.random.default_rng(0)
    n, dim = len(manifest.records), 32

    def model(audio: np.ndarray, text_of_clip: np.ndarray) -> ManifestEmbeddings:
        text = {lang: np.repeat(text_of_clip[:, None, :], mask.shape[1], axis=1)
                for lang, mask in present.items()}
        return ManifestEmbeddings(audio, text, present, captions)

    audio = rng.normal(size=(n, dim)).astype(np.float32)
    perfect = model(audio, audio)
    random = model(audio, rng.normal(size=(n, dim)).astype(np.float32))
    row = paired.compare(manifest, perfect, random)
    r1 = row["R@1"]
    assert r1["a"] == pytest.approx(100.0) and r1["diff"] > 50
    assert 0 < r1["ci95"][0] <= r1["diff"] <= r1["ci95"][1]


def test_a_checkpoint_against_itself_differs_by_nothing(paired, tiny_corpus, make_checkpoint,
                                                       shared_cache, tmp_path):
    checkpoint = str(make_checkpoint(5))
    val = tiny_corpus / "val.jsonl"
    out = tmp_path / "same.json"
    assert paired.main(["--a", checkpoint, "--b", checkpoint, "--manifest", str(val),
                        "--langs", "eng", "jpn", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["splits"][str(val)]
    n_clips = len(val.read_text().splitlines())
    assert 1 < row["n_units"] <= n_clips  # demo clips have no concept: a unit per clip
    for k in (1, 10):
        assert row[f"R@{k}"]["diff"] == 0 and row[f"R@{k}"]["ci95"] == [0.0, 0.0]
