"""Two checkpoints on the same split, query by query: the T2A R@k difference (A - B) with a
95% cluster-bootstrap interval, the queries of one concept (in every language) resampled
together, since they share recordings and captions (training/evaluation/study_stats.py).

    python scripts/sfx_paired.py --a data/run-top2-joint-10ep/best \
        --b data/run-top1-joint-12ep/best --manifest data/corpus-sfx-v5/test.jsonl --out p.json

The interval is over the split's queries (how much the test sample could move the
difference); it says nothing of the seed spread of either training run.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from atri.commands.common import apply_thread_settings
from atri.training.data.features import default_cache_dir
from atri.training.data.manifest import Manifest, read_manifest
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.caption_queries import t2a_queries
from atri.training.evaluation.embed import ManifestEmbeddings, check_langs, embed_manifest
from atri.training.evaluation.metrics import t2a_counts
from atri.training.evaluation.study_stats import cluster_bootstrap
from atri.training.fileio import atomic_write_text

KS = (1, 10)


def best_ranks(emb: ManifestEmbeddings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per language: (Q,) best rank of each T2A query (metrics.md: its best relevant clip)
    and (Q,) the first relevant clip of each query."""
    audio = np.asarray(emb.audio)
    out = {}
    for lang, text in emb.text.items():
        queries = t2a_queries(emb.present[lang], emb.captions[lang])
        counts = t2a_counts(audio, text, queries)  # (P,)
        best = np.minimum.reduceat(counts, queries.indptr[:-1]) + 1  # (Q,)
        out[lang] = (best, queries.clips[queries.indptr[:-1]])
    return out


def concept_units(manifest: Manifest, clips: np.ndarray) -> np.ndarray:
    """(Q,) int: the concept of each query's clip (its id when it has none)."""
    names = [str(manifest.records[i].meta.get("concept") or manifest.records[i].id)
             for i in clips]
    return np.unique(names, return_inverse=True)[1]


def compare(manifest: Manifest, a: ManifestEmbeddings, b: ManifestEmbeddings,
            ks: tuple[int, ...] = KS) -> dict:
    ranks_a, ranks_b = best_ranks(a), best_ranks(b)
    clips = np.concatenate([ranks_a[lang][1] for lang in ranks_a])
    units = concept_units(manifest, clips)
    out: dict = {"n_queries": int(len(clips)), "n_units": int(units.max() + 1)}
    for k in ks:
        # A and B as `atri eval` averages them (over languages); the interval resamples the
        # pooled queries, whose mean differs by the languages' slightly unequal query counts
        per_a = [100 * np.mean(ranks_a[lang][0] <= k) for lang in ranks_a]
        per_b = [100 * np.mean(ranks_b[lang][0] <= k) for lang in ranks_b]
        hit_a = np.concatenate([ranks_a[lang][0] <= k for lang in ranks_a]).astype(float)
        hit_b = np.concatenate([ranks_b[lang][0] <= k for lang in ranks_b]).astype(float)
        _, low, high = cluster_bootstrap(100 * (hit_a - hit_b), units)
        a_avg, b_avg = float(np.mean(per_a)), float(np.mean(per_b))
        out[f"R@{k}"] = {"a": a_avg, "b": b_avg, "diff": a_avg - b_avg, "ci95": [low, high]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="checkpoint A")
    parser.add_argument("--b", required=True, help="checkpoint B")
    parser.add_argument("--manifest", type=Path, action="append", required=True)
    parser.add_argument("--langs", nargs="+", help="languages (default: all in the manifest)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    apply_thread_settings()  # ATRI_THREADS, as every atri command applies it
    cache = default_cache_dir(os.environ)
    models = [load_checkpoint(args.a)[0], load_checkpoint(args.b)[0]]
    result: dict = {"a": args.a, "b": args.b, "splits": {}}
    print("| split | queries (concepts) | metric | A | B | A - B [95% CI] |")
    print("|---|---|---|---|---|---|")
    for path in args.manifest:
        manifest = read_manifest(path)
        langs = check_langs(manifest, args.langs)
        a, b = (embed_manifest(m, manifest, langs, cache_dir=cache) for m in models)
        row = result["splits"][str(path)] = compare(manifest, a, b)
        for k in KS:
            r = row[f"R@{k}"]
            print(f"| {path.stem} | {row['n_queries']} ({row['n_units']}) | T2A R@{k} | "
                  f"{r['a']:.2f} | {r['b']:.2f} | {r['diff']:+.2f} "
                  f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] |", flush=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
