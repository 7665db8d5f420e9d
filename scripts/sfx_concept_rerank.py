"""Would concept classifiers close the text side's gap? A study on a real-recordings corpus.

sfx_audio_ceiling.py --probe found that a linear concept classifier reads more out of the
audio space than the captions find in it. Here two classifiers trained on `train` only
(logistic regression on the checkpoint's embeddings: audio -> concept, caption -> concept,
8 languages) re-rank text-to-audio search:

    score(q, a) = cos(q, a) + lam * log sum_c P(c | q) P(c | a)

lam = 0 is plain search. Each split's recordings (mixtures left out) are the gallery and its
distinct captions per language the queries, relevance the evaluator's (the recordings that
carry the caption). lam is chosen on `val` R@10; every lam's figures are in the JSON, and
the chosen lam's gain over plain search per split with a 95% bootstrap interval over
concepts (queries of one concept are not independent).
`test-zeroshot` holds concepts neither classifier knows: the term can only mislead there.

    python scripts/sfx_concept_rerank.py data/corpus-sfx-v5 --checkpoint default \
        --out docs/results/sfx-concept-rerank.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from atri.training.data.features import default_cache_dir
from atri.training.data.manifest import read_manifest
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.caption_queries import t2a_queries
from atri.training.evaluation.embed import embed_manifest
from atri.training.fileio import atomic_write_text
from atri.training.languages import LANGS

SPLITS = ("train", "val", "test", "test-xpkg", "test-zeroshot")
BOOTSTRAP = 2000
LAMBDAS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
C = 1.0  # both classifiers' inverse L2 strength


def embed(model, corpus: Path, split: str, langs) -> dict:
    """The split's recordings: audio (N, E), per language the distinct captions' query
    embeddings (Q, E), their carriers (Q, N) and the owners' concepts."""
    manifest = read_manifest(corpus / f"{split}.jsonl")
    keep = [i for i, r in enumerate(manifest.records) if not r.id.startswith(("mix-", "mel-"))]
    emb = embed_manifest(model, manifest, langs, cache_dir=default_cache_dir(os.environ))
    concepts = np.array([manifest.records[i].meta.get("concept") for i in keep])
    queries = {}
    for lang in langs:
        present = emb.present[lang][keep]
        captions = [emb.captions[lang][i] for i in keep]
        q = t2a_queries(present, captions)
        carriers = q.relevance(len(keep))  # (Q, N)
        grid = emb.text[lang][keep]
        queries[lang] = (grid.reshape(-1, grid.shape[-1])[q.first], carriers)
    return {"audio": emb.audio[keep], "concepts": concepts, "queries": queries}


def classifier(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(x, y)


def rerank_hits(split: dict, audio_clf, text_clf, lam: float) -> dict[str, np.ndarray]:
    """Per language, the (Q, 2) hits at 1 and at 10 of the re-ranked search."""
    a = split["audio"] / np.linalg.norm(split["audio"], axis=1, keepdims=True)
    p_audio = audio_clf.predict_proba(split["audio"])  # (N, concepts)
    hits = {}
    for lang, (q, carriers) in split["queries"].items():
        scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ a.T  # (Q, N)
        if lam:
            agree = text_clf.predict_proba(q) @ p_audio.T  # (Q, N)
            scores = scores + lam * np.log(agree + 1e-12)
        best = np.where(carriers, scores, -np.inf).max(1, keepdims=True)
        ranks = 1 + ((scores > best) & ~carriers).sum(1)
        hits[lang] = np.stack([ranks <= 1, ranks <= 10], 1).astype(float)
    return hits


def rerank_recall(split: dict, audio_clf, text_clf, lam: float) -> tuple[float, float]:
    """(R@1, R@10), mean over languages, of the re-ranked search over one split."""
    hits = rerank_hits(split, audio_clf, text_clf, lam)
    r1, r10 = np.mean([h.mean(0) for h in hits.values()], 0) * 100
    return round(float(r1), 2), round(float(r10), 2)


def gain_interval(split: dict, plain: dict, picked: dict, seed: int = 0) -> list[float]:
    """R@10 gain (mean over languages) and its 95% bootstrap interval, concepts resampled
    (a query's concept: its first carrier's)."""
    names, cluster = np.unique(split["concepts"], return_inverse=True)
    diffs = {lang: picked[lang][:, 1] - plain[lang][:, 1] for lang in plain}
    owners = {lang: cluster[carriers.argmax(1)] for lang, (_, carriers) in split["queries"].items()}

    def stat(weight: np.ndarray) -> float:
        return float(np.mean([np.sum(weight[owners[lang]] * d) / np.sum(weight[owners[lang]])
                              for lang, d in diffs.items()]))

    rng = np.random.default_rng(seed)
    draws = [stat(np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names)))
             for _ in range(BOOTSTRAP)]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return [round(100 * stat(np.ones(len(names))), 2), round(100 * low, 2), round(100 * high, 2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--langs", nargs="+", choices=LANGS, default=list(LANGS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.checkpoint)
    splits = {s: embed(model, args.corpus, s, args.langs) for s in SPLITS
              if (args.corpus / f"{s}.jsonl").is_file()}
    train = splits.pop("train")
    audio_clf = classifier(train["audio"], train["concepts"])
    texts, labels = [], []
    for q, carriers in train["queries"].values():  # a caption's concept: its carriers'
        owner = carriers.argmax(1)
        texts.append(q)
        labels.append(train["concepts"][owner])
    text_clf = classifier(np.concatenate(texts), np.concatenate(labels))
    table = {s: {str(lam): rerank_recall(split, audio_clf, text_clf, lam) for lam in LAMBDAS}
             for s, split in splits.items()}
    chosen = max(LAMBDAS, key=lambda lam: (table["val"][str(lam)][1], -lam))
    gains = {s: gain_interval(split, rerank_hits(split, audio_clf, text_clf, 0.0),
                              rerank_hits(split, audio_clf, text_clf, chosen))
             for s, split in splits.items()}
    print(f"| split | plain R@1 / R@10 | lam = {chosen} (chosen on val) | R@10 gain [95% CI] |")
    print("|---|---|---|---|")
    for s, row in table.items():
        plain, picked = row["0.0"], row[str(chosen)]
        g = gains[s]
        print(f"| {s} | {plain[0]} / {plain[1]} | {picked[0]} / {picked[1]} "
              f"| {g[0]:+.1f} [{g[1]:+.1f}, {g[2]:+.1f}] |")
    if args.out:
        result = {"corpus": str(args.corpus), "checkpoint": args.checkpoint, "C": C,
                  "langs": args.langs, "chosen_lambda": chosen, "recall": table,
                  "r10_gain_ci95_over_concepts": gains, "bootstrap": BOOTSTRAP}
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
