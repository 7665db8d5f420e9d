"""scripts/sfx_audio_ceiling.py: nearest-neighbour concept accuracy, of known embeddings and
of a checkpoint's whole audio path (`--towers`) on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ceiling(load_script):
    return load_script("sfx_audio_ceiling")


def test_accuracy_counts_the_nearest_and_the_five_nearest(ceiling):
    # train: concepts a, b, c on three axes (and two fillers); test clip 0 lies on a's axis,
    # clip 1 between b (nearer) and c, clip 2 on an axis only a filler shares
    train = np.eye(5, dtype=np.float32)
    y_train = np.array(["a", "b", "c", "x", "y"])
    test = np.array([[1, 0, 0, 0, 0], [0, 0.9, 0.4, 0, 0], [0, 0, 0, 0, 1]], np.float32)
    assert ceiling.accuracy(train, y_train, test, np.array(["a", "c", "z"])) == (
        pytest.approx(100 / 3, abs=0.1), pytest.approx(200 / 3, abs=0.1))


def test_towers_measure_the_audio_path_without_mixtures(ceiling, tiny_corpus, make_checkpoint,
                                                        shared_cache, tmp_path):
    """A corpus laid out like a real-recordings one (the tiny demo clips, their instrument
    as the concept, two mixtures that must be left out): the JSON's accuracies are those of
    the checkpoint's own audio embeddings."""
    from atri.training.data.manifest import ClipRecord, read_manifest, write_manifest
    from atri.training.encoders.checkpoint import load_checkpoint
    from atri.training.evaluation.embed import embed_manifest

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    counts = {}
    for split, source in (("train", "train"), ("test", "test"), ("test-xpkg", "val")):
        manifest = read_manifest(tiny_corpus / f"{source}.jsonl")
        records = [ClipRecord(("mix-" if i < 2 else "") + r.id,
                              str(manifest.audio_path(r).resolve()), r.captions,
                              {**r.meta, "concept": r.meta["instrument"]})
                   for i, r in enumerate(manifest.records[:40])]
        write_manifest(corpus / f"{split}.jsonl", records)
        counts[split] = len(records) - 2
    checkpoint = str(make_checkpoint(5))
    out = tmp_path / "towers.json"
    assert ceiling.main([str(corpus), "--towers", checkpoint, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["recordings"] == counts and min(counts.values()) > 20

    model, _ = load_checkpoint(checkpoint)
    views = {}
    for split in ("train", "test", "test-xpkg"):
        manifest = read_manifest(corpus / f"{split}.jsonl")
        audio = np.asarray(embed_manifest(model, manifest, ["eng"], text=False).audio)[2:]
        views[split] = audio, np.array([r.meta["concept"] for r in manifest.records[2:]])
    for split in ("test", "test-xpkg"):
        expected = ceiling.accuracy(*views["train"], *views[split])
        assert tuple(result["accuracy"][checkpoint][split]) == expected
