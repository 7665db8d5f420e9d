"""Compare the same arms between two studies (scripts/study.py's results.json), seed by seed.

Used for the fine-tuned text tower: its second stage (`--out data/study-small3-ft`) against
the same second stage with the tower frozen (`--out data/study-small3-stage2`). Prints a
Markdown table of A - B per corpus, split, arm and metric: the means, Welch's 95% interval
with its t and degrees of freedom ("n/a" when an arm's seeds agree exactly). Only seeds
present in both studies are compared.

    python scripts/study_compare.py data/study-small3-ft/results.json \\
        data/study-small3-stage2/results.json --arms mlclap+ft kcl+ft
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atri.training.evaluation.study_report import DIFFERENCES, METRICS
from atri.training.evaluation.study_stats import welch


def load(path: Path) -> dict:
    try:
        return dict(json.loads(path.read_text())["corpora"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a scripts/study.py results.json ({e})") from e


def seed_values(corpus: dict, split: str, arm: str, metric: str, path: Path) -> dict[int, float]:
    """{seed: value} of one arm's metric; the seeds come from the arm's commands."""
    try:
        values = corpus["splits"][split][arm][metric]["values"]
        commands = corpus["commands"][arm]
    except KeyError as e:
        raise SystemExit(f"{path}: no {e} for split {split!r}, arm {arm!r}") from e
    seeds = [int(c.split("--seed ")[1].split()[0]) for c in commands]
    return dict(zip(seeds, values, strict=True))


def rows(a_path: Path, b_path: Path, arms: list[str], splits: list[str] | None,
         metrics: list[str]) -> list[str]:
    a, b = load(a_path), load(b_path)
    out = ["| corpus | split | arm | metric | seeds | A | B | A - B [Welch 95%] | t (df) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name in sorted(set(a) & set(b)):
        for split in splits or sorted(a[name]["splits"]):
            for arm in arms:
                for metric in metrics:
                    va = seed_values(a[name], split, arm, metric, a_path)
                    vb = seed_values(b[name], split, arm, metric, b_path)
                    seeds = sorted(set(va) & set(vb))
                    xa, xb = [va[s] for s in seeds], [vb[s] for s in seeds]
                    w = welch(xa, xb)
                    d = METRICS[metric][2]  # decimals, as in the study's own tables
                    interval = ("n/a" if w.t is None
                                else f"{w.diff:+.{d}f} [{w.low:+.{d}f}, {w.high:+.{d}f}]")
                    t = "n/a" if w.t is None else f"{w.t:+.1f} ({w.df:.1f})"
                    out.append(f"| {name} | {split} | {arm} | {metric} | {len(seeds)} | "
                               f"{sum(xa) / len(xa):.{d}f} | {sum(xb) / len(xb):.{d}f} | "
                               f"{interval} | {t} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", type=Path, help="results.json of study A")
    p.add_argument("b", type=Path, help="results.json of study B")
    p.add_argument("--arms", nargs="+", required=True)
    p.add_argument("--splits", nargs="+", help="default: every split of A")
    p.add_argument("--metrics", nargs="+", choices=list(METRICS),
                   default=[*DIFFERENCES, "dis"])
    args = p.parse_args(argv)
    print("\n".join(rows(args.a, args.b, args.arms, args.splits, args.metrics)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
