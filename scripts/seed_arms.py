"""Arms of a seeded study against a baseline arm, paired by seed: each run's best
validation score and its `atri eval` reports, the mean ± population std of every arm, and
each arm's difference from the baseline with a Student-t 95% interval over the seeds the
two share (study_stats.mean_interval).

    python scripts/seed_arms.py --runs 'data/mask-study/b24-{arm}-s{seed}' --seeds 0 1 2 3 4 \
        --arms plain meaning pos-meaning --baseline plain --evals eval6-test eval6-test-xpkg \
        --out docs/results/sfx-study/multi-positive.json

A run counts when its folder holds best/checkpoint.json and every named report
(<run>/<eval>/metrics.json); a named run that lacks one is an error, not a skipped seed.
The interval is over seeds (training noise); it says nothing of the test sample's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from atri.training.evaluation.study_stats import mean_interval
from atri.training.fileio import atomic_write_text

METRICS = (("t2a", "R@1"), ("t2a", "R@10"), ("a2t", "R@1"))


def read_run(folder: Path, evals: list[str]) -> dict:
    """{"val_score", "best_epoch", <eval>: {"t2a_R@1", ...}} of one run."""
    checkpoint = folder / "best" / "checkpoint.json"
    if not checkpoint.is_file():
        raise SystemExit(f"{folder}: no best/checkpoint.json (the run did not finish)")
    info = json.loads(checkpoint.read_text())
    out = {"best_epoch": info["epoch"], "val_score": info["metrics"]["val_score"]}
    for name in evals:
        report = folder / name / "metrics.json"
        if not report.is_file():
            raise SystemExit(f"{report}: missing (run atri eval --out {folder / name})")
        avg = json.loads(report.read_text())
        out[name] = {f"{d}_{m}": avg[d]["avg"][m] for d, m in METRICS}
    return out


def value(run: dict, key: str) -> float:
    """`val_score`, or `<eval>/<metric>` such as `eval6-test/t2a_R@10`."""
    if key == "val_score":
        return run[key]
    name, metric = key.rsplit("/", 1)
    return run[name][metric]


def summarise(runs: dict[str, dict[int, dict]], baseline: str, keys: list[str]) -> dict:
    """Per arm: mean and population std of every key; per other arm: the paired
    differences from `baseline` over the seeds both hold, with a t interval."""
    out: dict = {"arms": {}, "paired": {}}
    for arm, seeds in runs.items():
        out["arms"][arm] = {key: {"mean": statistics.mean(v), "pstdev": statistics.pstdev(v)}
                            for key in keys
                            for v in [[value(r, key) for r in seeds.values()]]}
        out["arms"][arm]["seeds"] = sorted(seeds)
    base = runs[baseline]
    for arm, seeds in runs.items():
        shared = sorted(set(seeds) & set(base))
        if arm == baseline or len(shared) < 2:
            continue
        out["paired"][arm] = {}
        for key in keys:
            diffs = [value(seeds[s], key) - value(base[s], key) for s in shared]
            low, high = mean_interval(diffs)
            out["paired"][arm][key] = {"n": len(diffs), "df": len(diffs) - 1, "diffs": diffs,
                                       "mean": statistics.mean(diffs), "ci95": [low, high]}
    return out


def markdown(summary: dict, baseline: str, keys: list[str]) -> str:
    """The two tables: arms (mean ± std) and differences from the baseline."""
    lines = ["| arm | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for arm, stats in summary["arms"].items():
        cells = [f"{stats[k]['mean']:.1f} ± {stats[k]['pstdev']:.1f}" for k in keys]
        lines.append(f"| {arm} | {len(stats['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", f"| arm − {baseline} | " + " | ".join(keys) + " |",
              "|---|" + "---|" * len(keys)]
    for arm, diffs in summary["paired"].items():
        cells = [f"{d['mean']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]"
                 for d in (diffs[k] for k in keys)]
        lines.append(f"| {arm} (n {next(iter(diffs.values()))['n']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True,
                        help="run folder pattern with {arm} and {seed}")
    parser.add_argument("--arms", nargs="+", required=True)
    parser.add_argument("--baseline", required=True, help="one of --arms")
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--evals", nargs="+", required=True,
                        help="report folders inside each run (<run>/<name>/metrics.json)")
    parser.add_argument("--metric", default="t2a_R@10", help="the table's metric per report")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if "{arm}" not in args.runs or "{seed}" not in args.runs:
        parser.error(f"--runs {args.runs!r} needs both {{arm}} and {{seed}}")
    if args.baseline not in args.arms:
        parser.error(f"--baseline {args.baseline!r} is not among --arms {args.arms}")
    if args.metric not in {f"{d}_{m}" for d, m in METRICS}:
        parser.error(f"--metric {args.metric!r}: one of {[f'{d}_{m}' for d, m in METRICS]}")
    runs = {arm: {s: read_run(Path(args.runs.format(arm=arm, seed=s)), args.evals)
                  for s in args.seeds} for arm in args.arms}
    keys = ["val_score", *[f"{e}/{d}_{m}" for e in args.evals for d, m in METRICS]]
    summary = summarise(runs, args.baseline, keys)
    shown = ["val_score", *[f"{e}/{args.metric}" for e in args.evals]]
    table = markdown(summary, args.baseline, shown)
    print(table)
    words = argv if argv is not None else sys.argv[1:]
    command = "python scripts/seed_arms.py " + " ".join(f"'{a}'" if "{" in a else a for a in words)
    atomic_write_text(args.out, json.dumps({"command": command, "runs": {
        arm: {str(s): r for s, r in seeds.items()} for arm, seeds in runs.items()},
        **summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
