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


def test_first_ranks_count_the_irrelevant_items_at_or_above_the_best_relevant_one(ceiling):
    scores = np.array([[0.9, 0.1, 0.5, 0.7], [0.2, 0.3, 0.4, 0.8]])
    relevant = np.array([[False, True, True, False], [False, False, False, True]])
    assert ceiling.first_ranks(scores, relevant).tolist() == [3, 1]
    tied = np.zeros((1, 4))  # features that cannot tell the items apart: no credit
    assert ceiling.first_ranks(tied, np.array([[False, True, False, False]])).tolist() == [4]
    assert ceiling.recall(np.array([1, 3, 11, 10])) == (25.0, 75.0)


def test_the_concept_oracle_finds_separable_concepts_and_skips_unseen_ones(ceiling):
    """Three concepts on three axes with noise: a linear probe ranks each concept's test
    recording first (a probe column mixed up with another concept's would not); a test
    concept train lacks is not a query."""
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 5
    y_train = np.repeat(["a", "b", "c"], 10)
    train = centres[[0] * 10 + [1] * 10 + [2] * 10] + rng.normal(size=(30, 8))
    y_test = np.array(["a", "b", "c", "z"])
    test = np.vstack([centres, rng.normal(size=(1, 8))]) + 0.1 * rng.normal(size=(4, 8))
    clf = ceiling.fit_probe(train, y_train, 1.0)
    assert ceiling.probe_recall(clf, test, y_test) == (100.0, 100.0, 3)
    assert ceiling.prototype_recall(train, y_train, test, y_test) == (100.0, 100.0, 3)


def test_the_prototype_oracle_asks_each_concepts_mean_direction(ceiling):
    """Concept a's train recordings lean toward axis 0 and 2, b's toward 1: a test
    recording on axis 2 alone is a's by its prototype (a's mean), and ranks first for a
    though no single a recording points there; b's query finds b's recording second."""
    train = np.array([[1.0, 0, 1, 0], [1, 0, 0.8, 0], [0, 1, 0, 0], [0, 1, 0.1, 0]])
    y_train = np.array(["a", "a", "b", "b"])
    test = np.array([[0, 0, 1.0, 0], [0, 0.9, 0, 0.3], [0, 0.5, 0, 1]])
    y_test = np.array(["a", "x", "b"])
    # a: its recording first; b: the unknown "x" recording (cos 0.95) above b's (0.45)
    assert ceiling.prototype_recall(train, y_train, test, y_test) == (50.0, 100.0, 2)


def test_captions_are_compared_with_their_concepts_prototype(ceiling):
    """The toy space above, one caption per test recording: a's caption sits on a's
    prototype, b's on a's too (wrong), the unknown concept's is no query. Half the
    captions are nearest their own prototype; the prototypes in their place rank a's
    recording first and b's second (behind the unknown recording)."""
    train = np.array([[1.0, 0, 1, 0], [1, 0, 0.8, 0], [0, 1, 0, 0], [0, 1, 0.1, 0]])
    y_train = np.array(["a", "a", "b", "b"])
    audio = np.array([[0, 0, 1.0, 0], [0, 0.9, 0, 0.3], [0, 0.5, 0, 1]])
    concepts = np.array(["a", "x", "b"])
    texts = {"eng": np.array([[[1.0, 0, 0.9, 0]], [[0, 1.0, 0, 0]], [[1, 0, 1, 0]]])}
    present = {"eng": np.ones((3, 1), dtype=bool)}
    captions = {"eng": [["the a sound"], ["an x sound"], ["the b sound"]]}
    out = ceiling.prototype_captions(audio, texts, present, captions, concepts, train, y_train)
    assert out["languages"]["eng"]["queries"] == 2
    assert out["nearest_prototype_is_own"] == 50.0
    assert out["prototype_query"] == [50.0, 100.0]


def test_towers_measure_the_audio_path_without_mixtures(ceiling, tiny_corpus, make_checkpoint,
                                                        shared_cache, tmp_path):
    """A corpus laid out like a real-recordings one (the tiny demo clips, their instrument
    as the concept, two mixtures that must be left out): the JSON's accuracies, concept
    oracle and caption recall are those of the checkpoint's own embeddings."""
    from atri.training.data.manifest import ClipRecord, read_manifest, write_manifest
    from atri.training.encoders.checkpoint import load_checkpoint
    from atri.training.evaluation.embed import embed_manifest
    from atri.training.evaluation.metrics import evaluate_embeddings

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    counts = {}
    for split, source in (("train", "train"), ("val", "val"), ("test", "test"),
                          ("test-xpkg", "val")):
        manifest = read_manifest(tiny_corpus / f"{source}.jsonl")
        records = [ClipRecord(("mix-" if i < 2 else "") + r.id,
                              str(manifest.audio_path(r).resolve()), r.captions,
                              {**r.meta, "concept": r.meta["instrument"], "attrs": str(i % 2)})
                   for i, r in enumerate(manifest.records[:40])]
        write_manifest(corpus / f"{split}.jsonl", records)
        counts[split] = len(records) - 2
    checkpoint = str(make_checkpoint(5))
    out = tmp_path / "towers.json"
    assert ceiling.main([str(corpus), "--towers", checkpoint, "--probe", "--langs", "eng",
                         "fra", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["recordings"] == counts and min(counts.values()) > 20

    model, _ = load_checkpoint(checkpoint)
    views = {}
    for split in ("train", "val", "test", "test-xpkg"):
        manifest = read_manifest(corpus / f"{split}.jsonl")
        text = split == "test"
        emb = embed_manifest(model, manifest, ["eng", "fra"] if text else ["eng"], text=text,
                             cache_dir=shared_cache)
        views[split] = emb.audio[2:], np.array([r.meta["concept"] for r in manifest.records[2:]])
        if split == "test":
            queries = ({k: v[2:] for k, v in emb.text.items()},
                       {k: v[2:] for k, v in emb.present.items()},
                       {k: v[2:] for k, v in emb.captions.items()})
    for split in ("test", "test-xpkg"):
        expected = ceiling.accuracy(*views["train"], *views[split])
        assert tuple(result["accuracy"][checkpoint][split]) == expected
    oracle = result["probe"][checkpoint]
    c = oracle["C"]
    assert c in ceiling.PROBE_C
    clf = ceiling.fit_probe(*views["train"], c)
    assert tuple(oracle["test"]) == ceiling.probe_recall(clf, *views["test"])
    assert oracle["by_C"][str(c)]["test"] == oracle["test"]
    assert tuple(oracle["prototype"]["test"]) == ceiling.prototype_recall(*views["train"],
                                                                          *views["test"])
    # the captions' own recall: the evaluator's numbers on the recordings under its rule;
    # wider relevance (meaning: concept and a made-up attribute) never lowers it
    captions = result["captions"][checkpoint]["test"]
    official = evaluate_embeddings(views["test"][0], *queries[:1], queries[1],
                                   captions=queries[2])["t2a"]
    assert sorted(captions["languages"]) == ["eng", "fra"]
    for figures, lang in ((captions, "avg"), (captions["languages"]["fra"], "fra")):
        assert figures["exact"] == [pytest.approx(official[lang]["R@1"], abs=0.051),
                                    pytest.approx(official[lang]["R@10"], abs=0.051)]
    for k in (0, 1):
        assert captions["concept"][k] >= captions["meaning"][k] >= captions["exact"][k]
    prototypes = result["prototype_captions"][checkpoint]["test"]
    assert sorted(prototypes["languages"]) == ["eng", "fra"]
    assert 0 <= prototypes["nearest_prototype_is_own"] <= 100
    assert prototypes["prototype_query"] == ceiling.prototype_captions(
        views["test"][0], *queries, views["test"][1], *views["train"])["prototype_query"]
