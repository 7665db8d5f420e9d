"""scripts/sfx_concept_rerank.py: concept classifiers re-ranking text-to-audio search, on
synthetic embeddings where only the classifiers can tell the concepts apart, and end to
end on real files, where lam = 0 must be the evaluator's own figure."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def rerank(load_script):
    return load_script("sfx_concept_rerank")


K = 20  # concepts: more than 10, so that R@10 is not 100 by luck


def synthetic(rng, n_per: int = 1) -> dict:
    """K concepts: audio on axes 0..K-1, captions on axes K..2K-1 (cosine says nothing),
    each caption carried by every clip of its concept."""
    concepts = np.repeat(np.arange(K).astype(str), n_per)
    axes = np.repeat(np.arange(K), n_per)
    audio = np.eye(2 * K)[axes] * 5 + rng.normal(size=(K * n_per, 2 * K))
    q = np.eye(2 * K)[K + np.arange(K)] * 5 + 0.1 * rng.normal(size=(K, 2 * K))
    carriers = concepts[None, :] == np.arange(K).astype(str)[:, None]
    return {"audio": audio, "concepts": concepts, "queries": {"eng": (q, carriers)}}


def captions_of(rng, n_per: int) -> np.ndarray:
    axes = K + np.repeat(np.arange(K), n_per)
    return np.eye(2 * K)[axes] * 5 + rng.normal(size=(K * n_per, 2 * K))


def test_the_concept_term_finds_what_cosine_cannot(rerank):
    rng = np.random.default_rng(0)
    train = synthetic(rng, 10)
    audio_clf = rerank.classifier(train["audio"], train["concepts"])
    text_clf = rerank.classifier(captions_of(rng, 10), train["concepts"])
    split = synthetic(rng)
    plain = rerank.rerank_recall(split, audio_clf, text_clf, 0.0)
    assert rerank.rerank_recall(split, audio_clf, text_clf, 1.0) == (100.0, 100.0)
    assert plain[1] < 90.0  # cosine alone misses some concepts at 10
    gain, low, high = rerank.gain_interval(
        split, rerank.rerank_hits(split, audio_clf, text_clf, 0.0),
        rerank.rerank_hits(split, audio_clf, text_clf, 1.0))
    assert gain == pytest.approx(100.0 - plain[1], abs=0.01) and 0 < low <= gain <= high


def test_lambda_zero_is_the_evaluators_figure(rerank, tiny_corpus, shared_cache, make_checkpoint,
                                               tmp_path):
    from atri.training.data.manifest import ClipRecord, read_manifest, write_manifest
    from atri.training.encoders.checkpoint import load_checkpoint
    from atri.training.evaluation.embed import embed_manifest
    from atri.training.evaluation.metrics import evaluate_embeddings

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split, source in (("train", "train"), ("val", "val"), ("test", "test")):
        manifest = read_manifest(tiny_corpus / f"{source}.jsonl")
        records = [ClipRecord(("mix-" if i < 2 else "") + r.id,
                              str(manifest.audio_path(r).resolve()), r.captions,
                              {**r.meta, "concept": r.meta["instrument"]})
                   for i, r in enumerate(manifest.records[:30])]
        write_manifest(corpus / f"{split}.jsonl", records)
    checkpoint = str(make_checkpoint(5))
    out = tmp_path / "rerank.json"
    assert rerank.main([str(corpus), "--checkpoint", checkpoint, "--langs", "eng", "fra",
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["recall"]) == {"val", "test"}
    assert set(result["recall"]["test"]) == {str(lam) for lam in rerank.LAMBDAS}
    assert result["chosen_lambda"] in rerank.LAMBDAS

    model, _ = load_checkpoint(checkpoint)
    manifest = read_manifest(corpus / "test.jsonl")
    emb = embed_manifest(model, manifest, ["eng", "fra"], cache_dir=shared_cache)
    official = evaluate_embeddings(emb.audio[2:], {k: v[2:] for k, v in emb.text.items()},
                                   {k: v[2:] for k, v in emb.present.items()},
                                   captions={k: v[2:] for k, v in emb.captions.items()})
    plain = result["recall"]["test"]["0.0"]
    assert plain == [pytest.approx(official["t2a"]["avg"]["R@1"], abs=0.006),
                     pytest.approx(official["t2a"]["avg"]["R@10"], abs=0.006)]
