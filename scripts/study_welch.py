"""Welch's t with its degrees of freedom and 95% interval, recomputed from the per-seed
values of a committed study (docs/results/study-*.json, written by the study script
before it reported df): every headline metric of every arm against a reference arm.

    python scripts/study_welch.py docs/results/study-default.json [--against mlclap]

Prints a markdown table; "n/a" where an arm's seeds agree exactly (zero variance).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atri.training.evaluation.study_stats import welch

METRICS = ("t2a_R@1", "t2a_R@5", "a2t_R@1", "a2t_R@5", "gap", "dis", "mrv_var_t2a",
           "mrv_var_a2t")


def rows(study: dict, against: str) -> list[str]:
    out = []
    for split, arms in study["headline"].items():
        ref = arms[against]
        for arm, metrics in arms.items():
            if arm == against:
                continue
            for name in METRICS:
                w = welch(metrics[name]["values"], ref[name]["values"])
                t = "n/a" if w.t is None else f"{w.t:+.1f}"
                df = "n/a" if w.df is None else f"{w.df:.1f}"
                ci = "n/a" if w.low is None else f"[{w.low:+.3f}, {w.high:+.3f}]"
                out.append(f"| {split} | {arm} | {name} | {w.diff:+.3f} | {ci} | {t} | {df} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path)
    p.add_argument("--against", default="mlclap")
    args = p.parse_args(argv)
    study = json.loads(args.study.read_text())
    print(f"Welch over {len(study['seeds'])} seeds against {args.against} "
          f"(`python scripts/study_welch.py {args.study} --against {args.against}`)\n")
    print("| split | arm | metric | difference | 95% interval | t | df |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows(study, args.against)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
