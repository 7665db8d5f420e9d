"""Checkpoints on the real test splits under both caption rules of `atri corpus build-sfx`:
`per-clip` (builder version 5: each recording draws its own captions, so a query counts
another recording of the same sound under another phrasing as a miss) and `per-meaning`
(version 6, the default: recordings of one concept and attributes share their captions,
so a query counts every one of them relevant). Same clips, same audio, same model.

    python scripts/sfx_caption_rules.py --per-clip data/corpus-sfx-v5 \
        --per-meaning data/corpus-sfx-v6 --checkpoint default=default \
        --checkpoint frozen=data/ckpt-a8e0517 --work data/caption-rules --out rules.json

Runs `atri eval` once per checkpoint, rule and split (kept in --work and reused), then
prints T2A R@1 / R@10 (8-language averages), MRV (variance), the number of queries per
language and the chance R@1 / R@10 of a random ranking under the split's query rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sfx_study import chance_recall, eval_report  # noqa: E402

from atri.training.data.manifest import read_manifest  # noqa: E402
from atri.training.fileio import atomic_write_text  # noqa: E402

SPLITS = ("test", "test-xpkg", "test-zeroshot")


def named(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or name in out:
            raise SystemExit(f"--checkpoint {item!r}: expected a new NAME=PATH")
        out[name] = path
    return out


def summary(metrics: dict) -> dict:
    return {"t2a_r1": round(metrics["t2a"]["avg"]["R@1"], 2),
            "t2a_r10": round(metrics["t2a"]["avg"]["R@10"], 2),
            "mrv_var": round(metrics["mrv_var"]["t2a"], 2),
            "queries_per_language": metrics["n_queries"]["t2a"]["eng"],
            "multi_relevant_per_language": metrics["n_queries"]["t2a_multi_relevant"]["eng"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-clip", type=Path, required=True, help="a corpus built per clip")
    parser.add_argument("--per-meaning", type=Path, required=True, help="the same, per meaning")
    parser.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--work", type=Path, required=True, help="folder for the eval reports")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    checkpoints = named(args.checkpoint)
    corpora = {"per-clip": args.per_clip, "per-meaning": args.per_meaning}
    for split in SPLITS:  # the rules may differ in captions only: same clips, same audio
        ids = [[(r.id, r.audio) for r in read_manifest(c / f"{split}.jsonl")]
               for c in corpora.values()]
        if ids[0] != ids[1]:
            raise SystemExit(f"{split}: the two corpora do not hold the same clips")
    result: dict = {"chance": {}, "checkpoints": {}}
    for rule, corpus in corpora.items():
        for split in SPLITS:
            records = list(read_manifest(corpus / f"{split}.jsonl"))
            result["chance"][f"{rule}/{split}"] = {
                "t2a_r1": round(chance_recall(records, 1), 2),
                "t2a_r10": round(chance_recall(records, 10), 2)}
    for name, checkpoint in checkpoints.items():
        rows = result["checkpoints"][name] = {"path": checkpoint}
        for rule, corpus in corpora.items():
            for split in SPLITS:
                report = args.work / f"{name}-{rule}-{split}"
                rows[f"{rule}/{split}"] = summary(
                    eval_report(checkpoint, corpus / f"{split}.jsonl", report))
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    head = "| checkpoint | rule | " + " | ".join(f"{s} R@1 / R@10 | MRV" for s in SPLITS) + " |"
    print(head + "\n" + "|---" * (2 + 2 * len(SPLITS)) + "|")
    for rule in corpora:
        cells = []
        for split in SPLITS:
            chance = result["chance"][f"{rule}/{split}"]
            cells += [f"{chance['t2a_r1']:.1f} / {chance['t2a_r10']:.1f}", ""]
        print(f"| chance | {rule} | " + " | ".join(cells) + " |")
    for name, rows in result["checkpoints"].items():
        for rule in corpora:
            cells = []
            for split in SPLITS:
                row = rows[f"{rule}/{split}"]
                cells += [f"{row['t2a_r1']:.1f} / {row['t2a_r10']:.1f}", f"{row['mrv_var']:.0f}"]
            print(f"| {name} | {rule} | " + " | ".join(cells) + " |")
    for rule in corpora:
        row = next(iter(result["checkpoints"].values()))
        queries = ", ".join(f"{s} {row[f'{rule}/{s}']['queries_per_language']}" for s in SPLITS)
        print(f"queries per language, {rule}: {queries}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
