"""Does a hubness penalty help text-to-audio search? A probe on validation splits.

Some recordings (radio static, cloth rustling) rank high for many unrelated queries:
"hubs". CSLS (Lample et al., ICLR 2018) and querybank normalisation (Bogolin et al., CVPR
2022) lower a gallery item's score by how close it sits to a bank of typical queries:

    score(q, a) = s(q, a) - lam * r_a,   r_a = mean of a's top-k similarities to the bank

The bank is text the model ships or trained on, never the split's own captions:
`vocabulary` (the default label vocabulary, 8 languages) or `train` (every caption of a
training manifest, 8 languages). lam = 0 is plain search. The penalty enters as one
extra dimension (audio [a, -lam r_a], text [t, 1]), so the metrics are computed by the
project's evaluator unchanged; A2T is unaffected by construction (constant per query).

    python scripts/sfx_hubness_probe.py --checkpoint default --bank vocabulary \
        --manifest data/sfx-final-v5-80-seed1/manifests/sfx-val.jsonl --out probe.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from atri.commands.common import apply_thread_settings
from atri.training.corpus.sfx.lexicon import vocabulary
from atri.training.data.features import default_cache_dir
from atri.training.data.manifest import read_manifest
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.embed import check_langs, embed_manifest
from atri.training.evaluation.metrics import evaluate_embeddings
from atri.training.fileio import atomic_write_text
from atri.training.languages import LANGS

KS = (10, 50)
LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def bank_vectors(
    model, bank: str, train: Path, cache: Path, langs: list[str] | None = None
) -> np.ndarray:
    """(M, E) normalised text embeddings of the querybank, in `langs` (default all)."""
    if bank == "vocabulary":
        with torch.no_grad():
            return np.concatenate([model.embed_text(vocabulary(lang), lang).numpy()
                                   for lang in langs or LANGS])
    manifest = read_manifest(train)
    emb = embed_manifest(model, manifest, check_langs(manifest, langs), audio=False,
                         cache_dir=cache)
    texts = [(lang, t) for lang in emb.text for clip in emb.captions[lang] for t in clip]
    vectors = np.concatenate([emb.text[lang][emb.present[lang]] for lang in emb.text])
    first: dict[tuple[str, str], int] = {}
    for i, key in enumerate(texts):
        first.setdefault(key, i)  # distinct (language, caption) strings
    return vectors[sorted(first.values())]


def hub_scores(audio: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """r_a (N,): mean of each clip's k highest similarities to the bank."""
    sims = audio @ bank.T  # (N, M)
    return -np.sort(-sims, axis=1)[:, :k].mean(axis=1)


def with_penalty(
    audio: np.ndarray, text: dict[str, np.ndarray], r: np.ndarray, lam: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """audio (N, D) -> [a, -lam r_a]; text[lang] (N, C, D) -> [t, 1]: their inner product
    is s(t, a) - lam * r_a, so any inner-product evaluator ranks by the penalised score."""
    shifted = np.concatenate([audio, -lam * r[:, None]], axis=1).astype(np.float32)
    ones = {lang: np.concatenate([v, np.ones((*v.shape[:2], 1), np.float32)], axis=2)
            for lang, v in text.items()}
    return shifted, ones


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--manifest", type=Path, action="append", required=True)
    parser.add_argument("--bank", choices=("vocabulary", "train"), default="vocabulary")
    parser.add_argument("--train", type=Path, help="training manifest, for --bank train")
    parser.add_argument("--bank-size", type=int, help="a random subset (seed 0) of this size")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS))
    parser.add_argument("--langs", nargs="+",
                        help="languages of the splits and the bank (default: all)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.bank == "train" and args.train is None:
        parser.error("--bank train needs --train MANIFEST")
    apply_thread_settings()  # ATRI_THREADS, as every atri command applies it
    cache = default_cache_dir(os.environ)
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    bank = bank_vectors(model, args.bank, args.train, cache, args.langs)
    if args.bank_size and args.bank_size < len(bank):
        rng = np.random.default_rng(0)
        bank = bank[np.sort(rng.choice(len(bank), args.bank_size, replace=False))]
    rows = []
    print(f"bank {args.bank}: {len(bank)} texts")
    print("| split | k | lam | T2A R@1 | T2A R@10 | MRV var |\n|---|---:|---:|---:|---:|---:|")
    for path in args.manifest:
        manifest = read_manifest(path)
        emb = embed_manifest(model, manifest, check_langs(manifest, args.langs), cache_dir=cache)
        audio = np.asarray(emb.audio)
        for k in args.ks:
            r = hub_scores(audio, bank, k)
            for lam in args.lambdas:
                if lam == 0 and k != args.ks[0]:
                    continue  # plain search does not depend on k
                shifted, text = with_penalty(audio, emb.text, r, lam)
                m = evaluate_embeddings(shifted, text, emb.present, captions=emb.captions)
                row = {"split": path.stem, "k": k, "lam": lam,
                       "R@1": m["t2a"]["avg"]["R@1"], "R@10": m["t2a"]["avg"]["R@10"],
                       "mrv_var_t2a": m["mrv_var"].get("t2a")}
                rows.append(row)
                print(f"| {row['split']} | {k} | {lam} | {row['R@1']:.2f} | {row['R@10']:.2f} "
                      f"| {row['mrv_var_t2a']:.2f} |", flush=True)
    record = {"checkpoint": args.checkpoint, "bank": args.bank, "bank_size": len(bank),
              "train": str(args.train) if args.train else None, "rows": rows}
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
