"""Training cost per strategy (our ATRI Table 4): peak memory and time of one optimiser step.

Each (setting, strategy) is measured in a fresh process, since peak RSS only grows within
one (shared spec metrics.md, study protocol). Settings:

- `cached`: the default embedded configuration, aisfx (512-d) + e5-small (384-d), both
  frozen, so a step runs only the heads and the temperature on cached features. The
  cached features are random tensors of the right shapes: the cost is the step, not the data.
- `text`: a trainable `hf:<dir>` text tower, a randomly initialised BERT this script builds
  and saves (6 layers, 384-d by default: a small real encoder's size), on real captions of
  the demo corpus, so KCL's K caption forwards and backwards weigh as in the paper. The
  audio side stays frozen and cached (a trainable audio tower would add the same cost to
  every strategy: each sees B clips per step).
- `text-gc`: as `text`, the step through GradCache (training/objectives/grad_cache.py)
  in chunks of B captions, so that every strategy back-propagates through at most
  ML-CLAP's B captions at a time. Its ratios are to `text`'s (plain) mlclap.
- `e5`, `e5-gc`: e5-small-torch, the real multilingual-e5-small weights, its top
  `--e5-layers` layers trainable (default 2), plain and through GradCache; the frozen
  lower layers' outputs are cached before the steps (as after a run's first epoch).
  `e5-gc`'s ratios are to `e5`'s mlclap.

Every step goes through the trainer's own code: the strategy's epoch plan
(`strategies.draw_epoch`), batches cut by `batches.TrainData.batches`, `step_loss.StepLoss`
(model heads, text tower, the strategy's loss) and `trainer.Run.step` (lr schedule, AdamW,
gradient clipping). Per process it reports

- `rss_setup_mb`: resident memory before the first step (runtime, model, data),
- `peak_rss_mb`: peak resident memory during the steps (the kernel's high-water mark is
  reset after setup through /proc/self/clear_refs, so loading transients do not count),
- `step_rss_mb` = peak_rss_mb - rss_setup_mb: what training adds (gradients, AdamW state,
  activations),
- `saved_activations_mb`: bytes autograd saves for backward in one step, parameters
  excluded (torch.autograd.graph.saved_tensors_hooks): the term that dominates ATRI's
  GPU memory, and independent of the machine's load; `saved_peak_mb`: the most of them
  held at once (GradCache saves as much in all, one chunk at a time),
- `step_ms_median`: median wall time of `--steps` steps after `--warmup` steps.

    .venv/bin/python bench/train_cost.py --out bench/results/train_cost.json
    .venv/bin/python bench/train_cost.py --quick --strategies mlclap,kcl --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from _results import cpu_model, markdown_table, write_json
from _text_tower import Tower, make_tower, tokens_per_caption
from _train_step import demo_captions, measure

from atri.training.languages import LANGS
from atri.training.objectives.strategies import NAMES as STRATEGIES

SETTINGS = ("cached", "text", "text-gc", "e5", "e5-gc")
BASELINE = {"text-gc": "text", "e5-gc": "e5"}  # whose mlclap a setting's ratios divide by
PAPER = {  # ATRI Table 4, AudioCaps, 8 languages, GPU: memory (GB) and training time (s)
    "mlclap": {"gpu_memory_gb": 22.2, "seconds": 3349},
    "cacl": {"gpu_memory_gb": 26.8, "seconds": 3745},
    "kcl": {"gpu_memory_gb": 68.3, "seconds": 4209},
}
RATIO_KEYS = ("step_ms_median", "peak_rss_mb", "step_rss_mb", "saved_activations_mb",
              "saved_peak_mb")
CHILD_TIMEOUT = 1800  # seconds per measured process


@dataclass(frozen=True)
class Budget:
    warmup: int  # untimed steps, the first of which counts the saved activations
    steps: int  # timed steps


@dataclass(frozen=True)
class Profile:
    """Defaults of a full run and of `--quick`."""

    batch_size: int
    clips: int  # distinct clips of the synthetic table; the batches cycle over its epoch
    tower: Tower
    budgets: dict[str, Budget]  # setting -> steps


PROFILES = {
    "full": Profile(24, 192, Tower(layers=6, hidden=384, heads=12, intermediate=1536, vocab=30522),
                    {"cached": Budget(10, 100), "text": Budget(2, 6), "text-gc": Budget(2, 6),
                     "e5": Budget(2, 6), "e5-gc": Budget(2, 6)}),
    "quick": Profile(8, 32, Tower(layers=2, hidden=64, heads=4, intermediate=128, vocab=2000),
                     {"cached": Budget(1, 3), "text": Budget(1, 2), "text-gc": Budget(1, 2),
                      "e5": Budget(1, 2), "e5-gc": Budget(1, 2)}),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny tower, B=8, 2-3 steps")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated: {','.join(SETTINGS)}")
    p.add_argument("--batch-size", type=int, help="contrastive batch B (default 24; quick 8)")
    p.add_argument("--k", type=int, default=8, help="training languages K (the first K)")
    p.add_argument("--layers", type=int, help="text tower layers (default 6; quick 2)")
    p.add_argument("--e5-layers", type=int, default=2,
                   help="trainable top layers of e5-small-torch in the e5 settings")
    p.add_argument("--steps", type=int, help="timed steps per process (default: per setting)")
    p.add_argument("--warmup", type=int, help="untimed steps first, >= 1 (default: per setting)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (1: with 2 threads a busy 2-core machine ran "
                        "the steps 4-10x slower, OpenMP workers waiting on each other)")
    p.add_argument("--out", type=Path, default=Path("bench/results/train_cost.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # JSON job: one measurement, this process
    return p


# --- the driver: one fresh process per measurement ---------------------------------------


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    threads = str(job["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "ATRI_THREADS": threads,
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{job['setting']}/{job['strategy']} failed (exit {proc.returncode}):"
                           f"\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per setting and strategy, each cost over mlclap's in the same setting (a GradCache
    setting: over mlclap's plain step, `BASELINE`)."""
    base = {r["setting"]: r for r in runs if r["strategy"] == "mlclap"}
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for run in runs:
        if (ref := base.get(BASELINE.get(run["setting"], run["setting"]))) is not None:
            out.setdefault(run["setting"], {})[run["strategy"]] = {
                key: round(run[key] / ref[key], 2) if ref[key] else None for key in RATIO_KEYS}
    return out


def paper_ratios() -> dict[str, dict[str, float]]:
    base = PAPER["mlclap"]
    return {s: {k: round(v / base[k], 2) for k, v in row.items()} for s, row in PAPER.items()}


def table(result: dict[str, Any]) -> str:
    columns = ["setting", "strategy", "texts/step:", "ms/step (median):", "x:", "peak RSS MB:",
               "x:", "step RSS MB:", "x:", "saved activations MB:", "x:",
               "saved at once MB:", "x:"]  # fmt: skip
    rows = []
    for r in result["runs"]:
        x = result["ratios"].get(r["setting"], {}).get(r["strategy"], {})
        rel = [f"{x[k]:.2f}" if x.get(k) is not None else "" for k in RATIO_KEYS]
        rows.append([r["setting"], r["strategy"], f"{r['texts_per_step']:.0f}",
                     f"{r['step_ms_median']:.1f}", rel[0], f"{r['peak_rss_mb']:.0f}", rel[1],
                     f"{r['step_rss_mb']:.0f}", rel[2], f"{r['saved_activations_mb']:.1f}",
                     rel[3], f"{r['saved_peak_mb']:.1f}", rel[4]])  # fmt: skip
    return markdown_table(columns, rows)


def _machine(threads: int, load_before: tuple[float, ...]) -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def run_all(args: argparse.Namespace, profile: Profile, tower: Tower,
            base: dict[str, Any]) -> dict[str, Any]:
    """Every (setting, strategy) asked for, each in a fresh process, one after the other."""
    runs, token_stats = [], None
    with tempfile.TemporaryDirectory(prefix="atri-train-cost-") as tmp:
        tower_dir = Path(tmp) / "bert-bench"
        if {"text", "text-gc"} & set(args.settings):
            captions = demo_captions(base["clips"])
            make_tower(tower_dir, tower, captions)
            token_stats = tokens_per_caption(tower_dir, captions)
        for setting in args.settings:
            budget = profile.budgets[setting]
            for strategy in args.strategies:
                runs.append(r := run_child({
                    **base, "setting": setting, "strategy": strategy,
                    "tower_dir": str(tower_dir), "e5_layers": args.e5_layers,
                    "warmup": max(1, args.warmup or budget.warmup),
                    "steps": args.steps or budget.steps,
                }))
                print(f"{setting:6s} {strategy:14s} {r['step_ms_median']:9.1f} ms/step  peak "
                      f"{r['peak_rss_mb']:.0f} MB  (load {r['loadavg_1min']})", file=sys.stderr)
    text_tower = {**asdict(tower), "tokens_per_caption": token_stats} if token_stats else None
    return {"text_tower": text_tower, "runs": runs, "ratios": ratios(runs)}


def _split(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(given)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0
    args.strategies, args.settings = _split(args.strategies), _split(args.settings)
    profile = PROFILES["quick" if args.quick else "full"]
    batch_size = args.batch_size or profile.batch_size
    bad = [s for s in args.strategies if s not in STRATEGIES]
    bad += [s for s in args.settings if s not in SETTINGS]
    if bad or not 2 <= args.k <= len(LANGS) or batch_size < 2:
        print(f"unknown {bad}, or --k not in 2..{len(LANGS)}, or --batch-size < 2; "
              f"strategies: {STRATEGIES}, settings: {SETTINGS}", file=sys.stderr)
        return 2
    tower = profile.tower if args.layers is None else replace(profile.tower, layers=args.layers)
    base = {"batch_size": batch_size, "langs": list(LANGS[: args.k]), "threads": args.threads,
            "clips": max(profile.clips, 4 * batch_size)}
    load_before = os.getloadavg()
    measured = run_all(args, profile, tower, base)
    result = {
        "command": shlex.join(["python", "bench/train_cost.py", *given]),
        "machine": _machine(args.threads, load_before),
        "batch_size": batch_size, "k": args.k, "langs": base["langs"], "clips": base["clips"],
        "settings": args.settings, "e5_layers": args.e5_layers, **measured,
        "paper": {"table4": PAPER, "ratios": paper_ratios()},
    }
    write_json(args.out, result)
    print(table(result))
    print(f"\nload average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}; "
          f"{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
