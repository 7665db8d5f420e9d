"""How far can frozen aisfx features carry real-recording retrieval? For every recording
(mixtures left out) of a real-recordings corpus's `test` and `test-xpkg` splits: is its
nearest `train` recording of the same concept (1-NN concept accuracy), and is one of its 5
nearest? Asked of several poolings of aisfx's activations and of a checkpoint's trained
audio space, so that a low figure can be blamed on the backbone, not the heads.

    python scripts/sfx_audio_ceiling.py data/corpus-sfx-v4 --checkpoint default \
        --out docs/results/sfx-audio-ceiling.json
    python scripts/sfx_audio_ceiling.py data/corpus-sfx-v5 --towers data/ckpt-a8e0517 \
        data/run-top2-joint-10ep/best --out towers.json
    python scripts/sfx_audio_ceiling.py data/corpus-sfx-v5 --towers default --probe \
        --out probe.json

`--towers`: instead of aisfx's poolings, each checkpoint's whole audio path (trained top
blocks and head: the space the index searches), so that a trained tower can be asked the
same question as the frozen features.

`--probe`: oracles for the text side. A query that names a test recording's concept
exactly is answered by a logistic-regression concept classifier trained on train's
recordings (its C chosen on `val`; the JSON has every C): the split's recordings ranked
by the probability of that concept. R@1 / R@10 per test recording of a train concept: is
a recording of its concept first, among the first 10? Beside it, the prototype oracle
asks each concept's mean train embedding (normalised) instead of a classifier, as a
caption could. Relevance is by concept, more lenient than the evaluator's (the clips
that carry the query's exact caption). With `--towers`, each checkpoint's own captions
(`--langs`, default all 8; each distinct caption once) are asked of the same recordings,
with three relevances: the evaluator's (the recordings that carry the caption), the same
concept and attributes, the same concept; and each caption is compared with its concept's
prototype (is it the nearest one; what would the prototype find in its place).

Poolings (per 2.3 s block, then over the clip's blocks): `mean` (the project's clip
embedding: the package's max over time, mean over blocks), `max` (max over blocks),
`avgt` (mean over time instead of max), `b3` (the third conv block, 256 channels),
`std` (the spread over blocks), concatenations of standardised poolings, and `heads`
(the checkpoint's audio head applied to `mean`). Features are centred on train's mean
and compared by cosine. About 5 minutes on 2 cores (aisfx runs on every recording).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atri.training.data.audio_io import load_audio
from atri.training.data.features import default_cache_dir
from atri.training.data.manifest import read_manifest
from atri.training.encoders.aisfx import load_aisfx_encoder, to_blocks
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.caption_queries import t2a_queries
from atri.training.evaluation.embed import embed_manifest
from atri.training.fileio import atomic_write_text
from atri.training.languages import LANGS
from atri.training.objectives.prototypes import group_prototypes

SPLITS = ("train", "val", "test", "test-xpkg")
EVAL = ("test", "test-xpkg")
PROBE_C = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strength of the probe, chosen on val
COMBOS = {"mean+max": ("mean", "max"), "mean+b3": ("mean", "b3"),
          "mean+avgt": ("mean", "avgt"), "mean+max+b3+avgt": ("mean", "max", "b3", "avgt")}


def poolings(encoder, wave: np.ndarray) -> dict[str, torch.Tensor]:
    blocks = to_blocks(encoder.frontend(torch.from_numpy(wave)[None])[0], encoder.cfg)
    x, outs = blocks.unsqueeze(1), []
    for block in encoder.cnn.children():
        x = block(x)
        outs.append(x)
    b3, b4 = outs[2].mean(3), outs[3].mean(3)  # (nb, C, T): mean over mels
    emb = b4.amax(2)  # (nb, 512): the package's block embedding
    return {"mean": emb.mean(0), "max": emb.amax(0), "avgt": b4.mean(2).mean(0),
            "b3": b3.amax(2).mean(0),
            "std": emb.std(0) if len(emb) > 1 else torch.zeros(emb.shape[1])}


def is_recording(record) -> bool:
    return not record.id.startswith(("mix-", "mel-"))


def recordings(corpus: Path, split: str) -> list:
    return [r for r in read_manifest(corpus / f"{split}.jsonl").records if is_recording(r)]


def tower_features(corpus: Path, checkpoints: list[str], captions: tuple[str, ...] = ()
                   ) -> tuple[dict, dict, dict]:
    """{split: {checkpoint: (n, d) audio embeddings of the split's recordings}}, labels,
    and with `captions` (languages) {checkpoint: {evaluation split: (text, present,
    captions) of the recordings in those languages (ManifestEmbeddings' fields),
    {"meaning": concept and attributes, "concept": concept} per recording}}."""
    feats: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    queries: dict[str, dict[str, tuple]] = {c: {} for c in checkpoints} if captions else {}
    manifests = {s: read_manifest(corpus / f"{s}.jsonl") for s in SPLITS}
    keep = {s: [i for i, r in enumerate(m.records) if is_recording(r)]
            for s, m in manifests.items()}
    labels = {s: np.array([manifests[s].records[i].meta.get("concept") for i in keep[s]])
              for s in SPLITS}
    meanings = {s: np.array([f"{labels[s][k]}|{manifests[s].records[i].meta.get('attrs', '')}"
                             for k, i in enumerate(keep[s])]) for s in SPLITS}
    for checkpoint in checkpoints:
        model, _ = load_checkpoint(checkpoint)
        for split, manifest in manifests.items():
            text = bool(captions) and split in EVAL
            emb = embed_manifest(model, manifest, captions if text else ["eng"], text=text,
                                 cache_dir=default_cache_dir(os.environ))
            feats[split][checkpoint] = np.asarray(emb.audio)[keep[split]]
            if text:
                rows = keep[split]
                queries[checkpoint][split] = (
                    {lang: grid[rows] for lang, grid in emb.text.items()},
                    {lang: mask[rows] for lang, mask in emb.present.items()},
                    {lang: [texts[i] for i in rows] for lang, texts in emb.captions.items()},
                    {"meaning": meanings[split], "concept": labels[split]})
        print(f"{checkpoint}: embedded", file=sys.stderr)
    return feats, labels, queries


def accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray,
             y_test: np.ndarray) -> tuple[float, float]:
    """(1-NN, any-of-5) concept accuracy in percent, cosine after centring on train."""
    mu = train.mean(0)
    a = (train - mu) / (np.linalg.norm(train - mu, axis=1, keepdims=True) + 1e-9)
    b = (test - mu) / (np.linalg.norm(test - mu, axis=1, keepdims=True) + 1e-9)
    sims = b @ a.T
    top5 = np.argsort(-sims, axis=1)[:, :5]
    one = float(np.mean(y_train[top5[:, 0]] == y_test))
    five = float(np.mean([y_test[i] in set(y_train[top5[i]]) for i in range(len(y_test))]))
    return round(100 * one, 1), round(100 * five, 1)


def first_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(Q,) 1-based rank of each query's best-ranked relevant item; scores, relevant (Q, N).
    A tie with an irrelevant item counts against the query (the evaluator counts only
    strictly higher scores; it matters where features tie, as the `std` pooling of
    one-block clips does, all zero)."""
    best = np.where(relevant, scores, -np.inf).max(1, keepdims=True)
    return 1 + ((scores >= best) & ~relevant).sum(1)


def recall(ranks: np.ndarray, digits: int | None = 1) -> tuple[float, float]:
    """(R@1, R@10) in percent, rounded to `digits` (None: not rounded)."""
    values = (100 * float(np.mean(ranks <= 1)), 100 * float(np.mean(ranks <= 10)))
    return values if digits is None else (round(values[0], digits), round(values[1], digits))


def fit_probe(train: np.ndarray, y_train: np.ndarray, c: float):
    """A logistic-regression concept classifier on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(
        train, y_train)


def probe_recall(clf, test: np.ndarray, y_test: np.ndarray) -> tuple[float, float, int]:
    """Concept-oracle (R@1, R@10) of a fitted probe over the test recordings whose concept
    it knows, and how many those are."""
    known = np.isin(y_test, clf.classes_)
    scores = clf.predict_log_proba(test).T  # (concepts, N): each concept a query
    column = {c: i for i, c in enumerate(clf.classes_)}
    rows = scores[[column[y] for y in y_test[known]]]  # (Q, N): query = a recording's concept
    return (*recall(first_ranks(rows, y_test[None, :] == y_test[known, None])), int(known.sum()))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def concept_prototypes(train: np.ndarray, y_train: np.ndarray) -> tuple[list[str], np.ndarray]:
    """train's concepts (sorted) and their (C, d) prototypes, as `--prototype-weight`
    computes them (objectives/prototypes.group_prototypes: the normalised mean of the
    concept's unit embeddings)."""
    names = sorted(set(y_train))
    index = {c: i for i, c in enumerate(names)}
    groups = torch.tensor([index[c] for c in y_train])
    unit = torch.from_numpy(_unit(np.asarray(train, dtype=np.float64)))
    return names, group_prototypes(unit, groups, len(names)).numpy()


def prototype_recall(train: np.ndarray, y_train: np.ndarray, test: np.ndarray,
                     y_test: np.ndarray) -> tuple[float, float, int]:
    """The prototype oracle: each concept's query is its prototype (concept_prototypes:
    what `--prototype-weight` trains captions toward), the recordings ranked by cosine.
    (R@1, R@10) over the test recordings of a train concept, and how many those are;
    relevance by concept, as probe_recall."""
    concepts, protos = concept_prototypes(train, y_train)
    known = np.isin(y_test, concepts)
    column = {c: i for i, c in enumerate(concepts)}
    scores = (_unit(test) @ protos.T).T  # (concepts, N)
    rows = scores[[column[y] for y in y_test[known]]]
    return (*recall(first_ranks(rows, y_test[None, :] == y_test[known, None])), int(known.sum()))


def prototype_captions(audio: np.ndarray, texts: dict[str, np.ndarray],
                       present: dict[str, np.ndarray], captions: dict[str, list[list[str]]],
                       concepts: np.ndarray, train: np.ndarray, y_train: np.ndarray
                       ) -> dict[str, Any]:
    """Each distinct caption of a recording of a train concept, as the evaluator asks
    them: how often its nearest prototype (concept_prototypes of train) is its own
    concept's, and the (R@1, R@10) at concept relevance when the caption is replaced by
    its concept's prototype (the best a caption could do by pointing at the prototype).
    Means over languages; each language's under "languages"."""
    names, protos = concept_prototypes(train, y_train)
    column = {c: i for i, c in enumerate(names)}
    a = _unit(audio)
    per_lang = {}
    for lang, grid in texts.items():
        q = t2a_queries(present[lang], captions[lang])
        carriers = q.relevance(len(a))  # (Q, N)
        concept = np.array([concepts[np.flatnonzero(row)[0]] for row in carriers])
        known = np.isin(concept, names)
        own = np.array([column[c] for c in concept[known]])
        text = _unit(grid.reshape(-1, grid.shape[-1])[q.first][known])
        nearest = float(np.mean((text @ protos.T).argmax(1) == own))
        relevant = concept[known][:, None] == concepts[None, :]
        ranks = first_ranks(protos[own] @ a.T, relevant)
        per_lang[lang] = {"nearest_prototype_is_own": round(100 * nearest, 1),
                          "prototype_query": recall(ranks), "queries": int(known.sum())}
    return {"nearest_prototype_is_own": round(float(np.mean(
                [r["nearest_prototype_is_own"] for r in per_lang.values()])), 1),
            "prototype_query": [round(float(v), 1) for v in np.mean(
                [r["prototype_query"] for r in per_lang.values()], 0)],
            "languages": per_lang}


def caption_recall(audio: np.ndarray, texts: dict[str, np.ndarray], present: dict[str, np.ndarray],
                   captions: dict[str, list[list[str]]], labels: dict[str, np.ndarray]
                   ) -> dict[str, Any]:
    """A checkpoint's own captions as queries over the same recordings, each distinct
    caption once per language as the evaluator asks them (caption_queries.py): (R@1,
    R@10), the mean over languages, for each relevance in `labels` (a label per
    recording): a recording is relevant when it shares the label of a recording that
    carries the caption; "exact" is the evaluator's own rule (carrying it). Each
    language's own figures under "languages"."""
    a = audio / np.linalg.norm(audio, axis=1, keepdims=True)
    per_lang: dict[str, dict[str, tuple[float, float]]] = {n: {} for n in ("exact", *labels)}
    for lang, grid in texts.items():
        q = t2a_queries(present[lang], captions[lang])
        scores = grid.reshape(-1, grid.shape[-1])[q.first] @ a.T  # (Q, N)
        carriers = q.relevance(len(a))  # (Q, N)
        per_lang["exact"][lang] = recall(first_ranks(scores, carriers), None)
        for name, y in labels.items():
            relevant = np.array([np.isin(y, y[row]) for row in carriers])
            per_lang[name][lang] = recall(first_ranks(scores, relevant), None)

    def rounded(pair) -> tuple[float, float]:
        return round(float(pair[0]), 1), round(float(pair[1]), 1)

    out: dict[str, Any] = {name: rounded(np.mean(list(rows.values()), 0))
                           for name, rows in per_lang.items()}
    out["languages"] = {lang: {name: rounded(rows[lang]) for name, rows in per_lang.items()}
                        for lang in texts}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--towers", nargs="+", metavar="CHECKPOINT",
                        help="measure these checkpoints' audio paths instead of aisfx's poolings")
    parser.add_argument("--probe", action="store_true",
                        help="add the concept oracle (and with --towers, the captions' own recall)")
    parser.add_argument("--langs", nargs="+", choices=LANGS, default=list(LANGS),
                        help="the captions' languages under --towers --probe (default: all 8)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.towers:
        feats, labels, queries = tower_features(
            args.corpus, args.towers, captions=tuple(args.langs) if args.probe else ())
        return report(feats, labels, lambda split, name: feats[split][name], args,
                      queries=queries)
    encoder = load_aisfx_encoder().eval()
    model, _ = load_checkpoint(args.checkpoint)
    feats: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for split in SPLITS:
            records = recordings(args.corpus, split)
            rows = [poolings(encoder, load_audio(args.corpus / r.audio, 44100)) for r in records]
            feats[split] = {k: torch.stack([row[k] for row in rows]).numpy() for k in rows[0]}
            mean = torch.from_numpy(feats[split]["mean"])
            feats[split]["heads"] = model.project_audio(mean).float().numpy()
            labels[split] = np.array([r.meta.get("concept") for r in records])
            print(f"{split}: {len(records)} recordings", file=sys.stderr)
    stats = {k: (feats["train"][k].mean(0), feats["train"][k].std(0) + 1e-6)
             for k in feats["train"]}

    def view(split: str, name: str) -> np.ndarray:
        parts = COMBOS.get(name)
        if parts is None:
            return feats[split][name]
        return np.concatenate([(feats[split][p] - stats[p][0]) / stats[p][1] for p in parts], 1)

    return report(feats, labels, view, args, extra=tuple(COMBOS))


def report(feats: dict, labels: dict, view, args, extra: tuple[str, ...] = (),
           queries: dict | None = None) -> int:
    """Print the accuracy table of every feature view (with --probe, the oracle's and the
    captions' tables too), and write them as JSON to --out."""
    result = {"corpus": str(args.corpus), "checkpoint": args.towers or args.checkpoint,
              "recordings": {s: int(len(labels[s])) for s in SPLITS}, "accuracy": {}}
    names = (*feats["train"], *extra)
    print("| features | test 1-NN | test any-of-5 | test-xpkg 1-NN | test-xpkg any-of-5 |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        cells = {s: accuracy(view("train", name), labels["train"], view(s, name), labels[s])
                 for s in EVAL}
        result["accuracy"][name] = cells
        print(f"| {name} | {cells['test'][0]} | {cells['test'][1]} | "
              f"{cells['test-xpkg'][0]} | {cells['test-xpkg'][1]} |")
    if args.probe:
        result["probe"] = {name: probe(view, labels, name) for name in names}
        print("\n| concept oracle on | C | val R@1 | test R@1 | test R@10 | test-xpkg R@1 "
              "| test-xpkg R@10 |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, row in result["probe"].items():
            print(f"| {name} | {row['C']} | {row['val'][0]} | {row['test'][0]} | "
                  f"{row['test'][1]} | {row['test-xpkg'][0]} | {row['test-xpkg'][1]} |")
            proto = row["prototype"]
            print(f"| {name}, prototypes | - | {proto['val'][0]} | {proto['test'][0]} | "
                  f"{proto['test'][1]} | {proto['test-xpkg'][0]} | {proto['test-xpkg'][1]} |")
    if queries:
        result["captions"] = {c: {s: caption_recall(view(s, c), *q[s]) for s in q}
                              for c, q in queries.items()}
        result["prototype_captions"] = {
            c: {s: prototype_captions(view(s, c), *q[s][:3], q[s][3]["concept"],
                                      view("train", c), labels["train"]) for s in q}
            for c, q in queries.items()}
        print("\n| captions of | split | relevant: the caption's carriers (R@1 / R@10) "
              "| same concept and attributes | same concept |")
        print("|---|---|---|---|---|")
        for c, rows in result["captions"].items():
            for s, r in rows.items():
                cells = [f"{r[k][0]} / {r[k][1]}" for k in ("exact", "meaning", "concept")]
                print(f"| {c} | {s} | " + " | ".join(cells) + " |")
        print("\n| captions of | split | nearest prototype is the concept's (%) "
              "| the concept's prototype as the query (R@1 / R@10, same concept) |")
        print("|---|---|---|---|")
        for c, rows in result["prototype_captions"].items():
            for s, r in rows.items():
                print(f"| {c} | {s} | {r['nearest_prototype_is_own']} | "
                      f"{r['prototype_query'][0]} / {r['prototype_query'][1]} |")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


def probe(view, labels: dict, name: str) -> dict:
    """The concept oracle on one feature view, for every C; C chosen by val R@1, then
    R@10 (val's R@10 is near 100: few recordings per concept), ties to the smaller."""
    by_c = {}
    for c in PROBE_C:
        clf = fit_probe(view("train", name), labels["train"], c)
        by_c[c] = {s: probe_recall(clf, view(s, name), labels[s]) for s in ("val", *EVAL)}
    best = max(PROBE_C, key=lambda k: (by_c[k]["val"][0], by_c[k]["val"][1], -k))
    prototypes = {s: prototype_recall(view("train", name), labels["train"], view(s, name),
                                      labels[s]) for s in ("val", *EVAL)}
    return {"C": best, **by_c[best], "by_C": {str(c): row for c, row in by_c.items()},
            "prototype": prototypes}


if __name__ == "__main__":
    sys.exit(main())
