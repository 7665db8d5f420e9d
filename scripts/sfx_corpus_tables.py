"""The tables docs/corpus.md shows for the real-recordings corpus, computed from a built
corpus: coverage by concept group and split, 30 sampled captions per language, and the
attribution of every package the corpus draws on.

    python scripts/sfx_corpus_tables.py data/corpus-sfx > docs/results/sfx-corpus-tables.md
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

from atri.training.corpus.sfx.lexicon import CONCEPTS
from atri.training.corpus.sfx.packages import PACKAGES
from atri.training.data.manifest import read_manifest
from atri.training.languages import LANGS

SPLITS = ("train", "val", "test", "test-xpkg", "test-zeroshot")
SAMPLES = 30


def coverage(manifests: dict) -> list[str]:
    """Clips per concept group and split (recordings; mixtures counted apart)."""
    clips: dict[str, Counter] = defaultdict(Counter)
    concepts: dict[str, set[str]] = defaultdict(set)
    for split, manifest in manifests.items():
        for r in manifest:
            kind = "recording" if "package" in r.meta else f"{r.meta.get('kind', 'mix')} mixture"
            concept = str(r.meta.get("concept", r.meta.get("background_concept", "")))
            group = CONCEPTS[concept].group if kind == "recording" else kind
            clips[group][split] += 1
            if kind == "recording":
                concepts[group].add(concept)
    lines = ["| group | concepts | " + " | ".join(SPLITS) + " |", "|---" * (len(SPLITS) + 2) + "|"]
    for group in sorted(clips):
        n = len(concepts[group]) or ""
        counts = " | ".join(str(clips[group][s]) for s in SPLITS)
        lines.append(f"| {group} | {n} | {counts} |")
    return lines


def samples(manifests: dict, seed: int = 0) -> list[str]:
    """SAMPLES captions per language: the same clips and caption slots in every language."""
    rng = random.Random(seed)
    pool = [(r, j) for r in manifests["train"] for j in range(r.n_captions())]
    picked = rng.sample(pool, SAMPLES)
    lines = []
    for lang in LANGS:
        lines += [f"**{lang}**", ""]
        lines += [f"{i + 1}. {r.captions[lang][j]}" for i, (r, j) in enumerate(picked)]
        lines.append("")
    return lines


def attribution(manifests: dict) -> list[str]:
    used = Counter(r.meta["package"] for m in manifests.values() for r in m if "package" in r.meta)
    lines = ["| package | clips | licence | attribution |", "|---|---|---|---|"]
    for name in sorted(used):
        p = PACKAGES[name]
        others = sorted({lic.spdx for lic in p.licences} - {p.licence})
        licence = p.licence + (f"; some files {', '.join(others)} (clip meta and "
                               "packages.py say which)" if others else "")
        lines.append(f"| {name} | {used[name]} | {licence} | {p.attribution} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    args = parser.parse_args(argv)
    manifests = {s: read_manifest(args.corpus / f"{s}.jsonl") for s in SPLITS}
    stamp = json.loads((args.corpus / "corpus.json").read_text())["stamp"]
    print(f"<!-- scripts/sfx_corpus_tables.py {args.corpus}; stamp {json.dumps(stamp)} -->\n")
    print("## Coverage (clips per concept group and split)\n")
    print("\n".join(coverage(manifests)))
    print(f"\n## {SAMPLES} training captions per language (the same clips in each)\n")
    print("\n".join(samples(manifests)))
    print("## Attribution\n")
    print("\n".join(attribution(manifests)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
