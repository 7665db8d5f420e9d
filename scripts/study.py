"""The replication study (shared spec metrics.md, study protocol): every strategy x seed
trained with the same data, backbone, batch and optimiser, the best-validation
checkpoint evaluated on `test` and `test-xfont`, and each difference to ML-CLAP tested
with Welch's t over seeds and a paired bootstrap over test queries.

    python scripts/study.py --corpus data/corpus-small --out data/study-small [--seeds 0 1 2]

Runs are resumable: a finished run (run.json status "done") is not trained again, and
evaluation results are cached per run. Writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from atri.training.data.manifest import read_manifest
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.embed import embed_manifest
from atri.training.evaluation.metrics import a2t_counts, evaluate_embeddings, t2a_ranks
from atri.training.languages import LANGS

log = logging.getLogger("study")
BASELINE = "mlclap"
# name -> (strategy, epoch multiplier); mlclap-x8 sees as many captions as KCL (K = 8)
ARMS = {
    "mlclap": ("mlclap", 1),
    "mlclap-mixture": ("mlclap-mixture", 1),
    "cacl": ("cacl", 1),
    "kcl": ("kcl", 1),
    "kcl-balanced": ("kcl-balanced", 1),
    "mlclap-x8": ("mlclap", 8),
}
SPLITS = ("test", "test-xfont")


def train_command(corpus: Path, run: Path, strategy: str, epochs: int, seed: int,
                  batch: int) -> list[str]:
    return [
        "atri", "train", "--train", str(corpus / "train.jsonl"), "--val",
        str(corpus / "val.jsonl"), "--strategy", strategy, "--out", str(run),
        "--epochs", str(epochs), "--seed", str(seed), "--batch-size", str(batch),
    ]


def run_training(cmd: list[str], run: Path) -> None:
    """Each run in a fresh process, so its peak RSS is its own (it only grows)."""
    status = run / "run.json"
    if status.is_file() and json.loads(status.read_text()).get("status") == "done":
        return
    if (run / "config.json").is_file():
        cmd = cmd + ["--resume"]
    exe = str(Path(sys.executable).parent / "atri")
    log.info("%s", " ".join(cmd))
    subprocess.run([exe, *cmd[1:]], check=True)


def per_query(model, manifest, cache_dir: Path) -> dict:
    """Aggregate metrics plus the per-query values the paired bootstrap resamples."""
    audio, text, present, captions = embed_manifest(model, manifest, cache_dir=cache_dir)
    metrics = evaluate_embeddings(audio, text, present, captions=captions)
    langs = list(text)
    t2a = np.stack([t2a_ranks(audio, text[lang], present[lang]) for lang in langs])  # (L, N, C)
    a2t = np.stack([a2t_counts(audio, text[lang], present[lang])[:, 0] + 1 for lang in langs])
    return {"metrics": metrics, "t2a_ranks": t2a, "a2t_ranks": a2t}  # a2t: (L, N) best rank


def query_values(q: dict) -> dict[str, np.ndarray]:
    """Per-query values whose mean is the metric: T2A/A2T R@1 averaged over languages
    (per caption slot / per clip), and T2A rank variance and std over languages."""
    t2a, a2t = q["t2a_ranks"], q["a2t_ranks"]
    return {
        "t2a_R@1": np.nanmean(np.where(np.isnan(t2a), np.nan, t2a == 1), axis=0).reshape(-1)
        * 100,  # (N*C,)
        "a2t_R@1": (a2t == 1).mean(axis=0) * 100,  # (N,)
        "mrv_var_t2a": t2a.var(axis=0).reshape(-1),
        "mrv_std_t2a": t2a.std(axis=0).reshape(-1),
    }


def evaluate_run(run: Path, corpus: Path, cache_dir: Path) -> dict:
    out = run / "study_eval.npz"
    meta = run / "study_eval.json"
    if out.is_file() and meta.is_file():
        arrays = dict(np.load(out))
        return {"metrics": json.loads(meta.read_text()), "arrays": arrays}
    model, _ = load_checkpoint(run / "best")
    metrics, arrays = {}, {}
    for split in SPLITS:
        q = per_query(model, read_manifest(corpus / f"{split}.jsonl"), cache_dir)
        metrics[split] = q["metrics"]
        for name, values in query_values(q).items():
            arrays[f"{split}/{name}"] = values
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    metrics["train"] = {
        "epoch_seconds": float(np.mean([r["train_seconds"] for r in logs])),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in logs),
        "best_epoch": max(logs, key=lambda r: r["val_score"])["epoch"],
    }
    np.savez(out, **arrays)
    meta.write_text(json.dumps(metrics))
    return {"metrics": metrics, "arrays": arrays}


def welch_t(a: list[float], b: list[float]) -> float:
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    se = np.sqrt(a_.var(ddof=1) / len(a_) + b_.var(ddof=1) / len(b_))
    return float((a_.mean() - b_.mean()) / se) if se > 0 else float("nan")


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple:
    """95% interval of mean(a - b) over queries resampled with replacement."""
    rng = np.random.default_rng(seed)
    diff = a - b
    idx = rng.integers(0, len(diff), size=(n, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache/atri/features")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results: dict = {"corpus": str(args.corpus), "epochs": args.epochs, "seeds": args.seeds,
                     "batch_size": args.batch_size, "arms": {}}
    for arm in args.arms:
        strategy, mult = ARMS[arm]
        runs = []
        for seed in args.seeds:
            run = args.out / "runs" / f"{arm}-s{seed}"
            cmd = train_command(args.corpus, run, strategy, args.epochs * mult, seed,
                                args.batch_size)
            run_training(cmd, run)
            runs.append({"seed": seed, "command": " ".join(cmd),
                         **evaluate_run(run, args.corpus, args.cache_dir)})
        results["arms"][arm] = runs
    summary = summarise(results)
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    (args.out / "results.md").write_text(render_markdown(summary))
    print(render_markdown(summary))
    return 0


def metric_of(metrics: dict, split: str, name: str) -> float:
    m = metrics[split]
    direction, _, key = name.partition("_")
    if direction in ("t2a", "a2t"):
        return m[direction]["avg"][key]
    if name.startswith("mrv"):
        kind, _, direction = name.rpartition("_")
        return m[kind][direction]
    return m[name]["avg"]


HEADLINE = ("t2a_R@1", "t2a_R@5", "t2a_mAP@10", "a2t_R@1", "a2t_R@5", "a2t_mAP@10",
            "gap", "dis", "mrv_var_t2a", "mrv_std_t2a", "mrv_var_a2t", "mrv_std_a2t")
BOOTSTRAP = ("t2a_R@1", "a2t_R@1", "mrv_var_t2a", "mrv_std_t2a")


def summarise(results: dict) -> dict:
    summary = {k: v for k, v in results.items() if k != "arms"}
    summary["headline"], summary["per_language"], summary["cost"] = {}, {}, {}
    base = results["arms"].get(BASELINE)
    for arm, runs in results["arms"].items():
        summary["commands"] = summary.get("commands", {}) | {arm: [r["command"] for r in runs]}
        summary["cost"][arm] = {
            k: [r["metrics"]["train"][k] for r in runs]
            for k in ("epoch_seconds", "peak_rss_mb", "best_epoch")
        }
        for split in SPLITS:
            row = {}
            for name in HEADLINE:
                vals = [metric_of(r["metrics"], split, name) for r in runs]
                row[name] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)),
                             "values": vals}
                if base is not None and arm != BASELINE:
                    ref = [metric_of(r["metrics"], split, name) for r in base]
                    row[name]["welch_t"] = welch_t(vals, ref)
            if base is not None and arm != BASELINE:
                for name in BOOTSTRAP:
                    ours = np.mean([r["arrays"][f"{split}/{name}"] for r in runs], axis=0)
                    ref = np.mean([r["arrays"][f"{split}/{name}"] for r in base], axis=0)
                    row[name]["bootstrap"] = paired_bootstrap(ours, ref)
            summary["headline"].setdefault(split, {})[arm] = row
            per_lang = {}
            for direction in ("t2a", "a2t"):
                for lang in runs[0]["metrics"][split][direction]:
                    for key in ("R@1", "R@5", "mAP@10"):
                        vals = [r["metrics"][split][direction][lang][key] for r in runs]
                        per_lang[f"{direction}/{lang}/{key}"] = [float(np.mean(vals)),
                                                                 float(np.std(vals, ddof=1))]
            summary["per_language"].setdefault(split, {})[arm] = per_lang
    return summary


def _cell(row: dict, name: str, pct: bool = True) -> str:
    m = row[name]
    text = f"{m['mean']:.2f} ± {m['std']:.2f}" if pct else f"{m['mean']:.4f} ± {m['std']:.4f}"
    if "welch_t" in m:
        text += f" (t={m['welch_t']:+.1f})"
    return text


def render_markdown(summary: dict) -> str:
    """Tables of the study: headline metrics per arm (mean ± std over seeds, Welch t
    against ML-CLAP), bootstrap intervals, per-language T2A R@1, and cost."""
    lines = []
    for split, arms in summary["headline"].items():
        lines += [f"### {split}: averages over languages "
                  f"(mean ± std over seeds; t = Welch t vs {BASELINE})", "",
                  "| arm | T2A R@1 | T2A R@5 | T2A mAP@10 | A2T R@1 | A2T R@5 | A2T mAP@10 |",
                  "|---|---|---|---|---|---|---|"]
        for arm, row in arms.items():
            cells = [_cell(row, n) for n in HEADLINE[:6]]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines += ["", "| arm | Gap | Dis | MRV var T2A | MRV std T2A | MRV var A2T | MRV std A2T |",
                  "|---|---|---|---|---|---|---|"]
        for arm, row in arms.items():
            cells = [_cell(row, n, pct=n not in ("gap", "dis")) for n in HEADLINE[6:]]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines += ["", f"Paired bootstrap over {split} queries (seed-averaged per-query values, "
                  "2,000 resamples): difference to ML-CLAP and its 95% interval.", "",
                  "| arm | T2A R@1 | A2T R@1 | MRV var T2A | MRV std T2A |",
                  "|---|---|---|---|---|"]
        for arm, row in arms.items():
            if arm == BASELINE:
                continue
            cells = []
            for name in BOOTSTRAP:
                d, lo, hi = row[name]["bootstrap"]
                mark = "" if lo <= 0 <= hi else " *"
                cells.append(f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]{mark}")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines += ["", "`*`: the interval excludes 0.", ""]
        per_lang = summary["per_language"][split]
        seen = {k.split("/")[1] for k in next(iter(per_lang.values()))}
        langs = [lang for lang in LANGS if lang in seen]
        for direction in ("t2a", "a2t"):
            lines += [f"{direction.upper()} R@1 per language ({split}):", "",
                      "| arm | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
            for arm, values in per_lang.items():
                cells = [f"{values[f'{direction}/{lang}/R@1'][0]:.1f}" for lang in langs]
                lines.append(f"| {arm} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["### Cost (per run; CPU, frozen backbones, cached features)", "",
              "| arm | seconds per epoch | peak RSS (MB) | best epoch per seed |",
              "|---|---|---|---|"]
    for arm, cost in summary["cost"].items():
        lines.append(f"| {arm} | {np.mean(cost['epoch_seconds']):.2f} | "
                     f"{max(cost['peak_rss_mb']):.0f} | {cost['best_epoch']} |")
    lines += ["", "### Commands", ""]
    for arm, cmds in summary["commands"].items():
        lines += [f"- {arm}:", "  ```", *[f"  {c}" for c in cmds], "  ```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
