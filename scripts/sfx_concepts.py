"""What a checkpoint finds among real recordings, concept by concept: for every concept of
a real-recordings manifest, T2A R@1 and R@10 of its captions (one query per distinct
caption string and language, every clip carrying it relevant: shared spec metrics.md),
averaged over the 8 languages, against the whole split as the gallery.

    python scripts/sfx_concepts.py --checkpoint default --manifest data/corpus-sfx/test.jsonl

Prints a markdown table sorted by R@10 (mixture clips count under their foreground concept),
then, per language, how often a recording's own concept label is among the 5 labels of the
default vocabulary (`atri index build --vocabulary default`) nearest to it.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from atri.commands.common import apply_thread_settings
from atri.training.data.features import default_cache_dir
from atri.training.data.manifest import read_manifest
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.embed import embed_manifest
from atri.training.languages import LANGS


def concept_recall(audio: np.ndarray, text: dict, captions: dict, concepts: list[str]) -> dict:
    """concept -> (R@1, R@10, queries): over its caption strings in every language."""
    hits: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for lang in LANGS:
        carriers: dict[str, list[tuple[int, int]]] = {}
        for i, clip_captions in enumerate(captions[lang]):
            for j, caption in enumerate(clip_captions):
                carriers.setdefault(caption, []).append((i, j))
        for slots in carriers.values():
            i, j = slots[0]
            scores = audio @ text[lang][i, j]  # (N,)
            relevant = np.zeros(len(audio), dtype=bool)
            relevant[[s[0] for s in slots]] = True
            best = scores[relevant].max()
            rank = 1 + int((scores[~relevant] > best).sum())
            hits[concepts[i]].append((rank <= 1, rank <= 10))
    return {c: (100 * np.mean([h[0] for h in v]), 100 * np.mean([h[1] for h in v]), len(v))
            for c, v in hits.items()}


def label_accuracy(model, audio: np.ndarray, concepts: list[str], top: int = 5) -> dict:
    """lang -> percent of recordings whose concept's label (lexicon.label) is among the
    `top` vocabulary labels nearest to their audio embedding."""
    import torch

    from atri.training.corpus.sfx.lexicon import label, vocabulary

    out = {}
    for lang in LANGS:
        labels = vocabulary(lang)
        with torch.no_grad():
            vectors = model.embed_text(labels, lang).numpy()  # (V, E)
        nearest = np.argsort(-(audio @ vectors.T), axis=1)[:, :top]  # (N, top)
        hits = [label(c, lang) in {labels[j] for j in row}
                for c, row in zip(concepts, nearest, strict=True)]
        out[lang] = 100 * float(np.mean(hits))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args(argv)
    apply_thread_settings()  # ATRI_THREADS, as every atri command applies it
    model, _ = load_checkpoint(args.checkpoint)
    manifest = read_manifest(args.manifest)
    emb = embed_manifest(model, manifest, LANGS, cache_dir=default_cache_dir(os.environ))
    concepts = [str(r.meta.get("concept", "melody")) for r in manifest]
    clips = defaultdict(int)
    for c in concepts:
        clips[c] += 1
    text = {lang: np.asarray(emb.text[lang]) for lang in LANGS}
    table = concept_recall(np.asarray(emb.audio), text, emb.captions, concepts)
    print(f"<!-- scripts/sfx_concepts.py --checkpoint {args.checkpoint} "
          f"--manifest {args.manifest}; gallery {len(manifest)} clips -->")
    print("| concept | clips | queries (8 languages) | T2A R@1 | T2A R@10 |")
    print("|---|---|---|---|---|")
    for concept, (r1, r10, n) in sorted(table.items(), key=lambda kv: (-kv[1][1], kv[0])):
        print(f"| {concept} | {clips[concept]} | {n} | {r1:.0f} | {r10:.0f} |")
    real = [i for i, r in enumerate(manifest) if "package" in r.meta]
    accuracy = label_accuracy(model, np.asarray(emb.audio)[real], [concepts[i] for i in real])
    print(f"\nOwn label among the 5 nearest default-vocabulary labels, {len(real)} recordings:\n")
    print("| " + " | ".join(LANGS) + " |\n" + "|---" * len(LANGS) + "|")
    print("| " + " | ".join(f"{accuracy[lang]:.1f}" for lang in LANGS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
