"""The strategy study (shared spec metrics.md, study protocol): every arm x seed x corpus
trained to convergence (early stopping on the validation score), its best checkpoint
evaluated on every test split of its corpus, and each difference to ML-CLAP reported with
Welch's t, its degrees of freedom and 95% interval over seeds, and a cluster bootstrap
over test queries (atri.training.evaluation.study_report).

    python scripts/study.py --corpus data/corpus-default data/corpus-default-s1 \\
        --out data/study --seeds 0 1 2 3 4 --epochs 40 --patience 5
    python scripts/study.py ... --finetune "--text e5-small-torch --text-trainable-layers 2"

Arms differ in strategy and budget only. Step-matched pairs: kcl, kcl-balanced, cacl and
mlclap take the same optimiser steps per epoch (one batch row per clip); kcl-x8,
kcl-balanced-x8 and mlclap-x8 have 8x their epoch budget; mlclap-mixture's budget is cut
to mlclap's optimiser steps (its epoch has ~3.4 rows per clip). Early stopping ends every
run before its budget if validation stalls; the tables give the steps, caption updates
and audio passes each arm actually took, and how many runs stopped early (converged)
rather than at the end of their budget. `--finetune ARGS` adds every arm (or those of
`--finetune-arms`) again as ARM+ft with ARGS passed to `atri train` (a fine-tuned text
tower: the flags are the tower's, this script does not interpret them); with
`--finetune-from ARM` each starts from the heads of that frozen arm's run of its seed
(`atri train --init-from`), a second stage with its own budget (`--finetune-epochs`).

Runs are resumable: a finished run (run.json status "done") is not trained again, and its
evaluation is cached per split. Writes OUT/results.json, OUT/results.md and
OUT/curves-<corpus>.png (validation score against optimiser steps and caption updates).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atri.training.data.manifest import Manifest, read_manifest
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.embed import embed_manifest
from atri.training.evaluation.metrics import a2t_counts, evaluate_embeddings, t2a_ranks
from atri.training.evaluation.rank_consistency import (
    a2t_top1,
    log_rank_variance,
    t2a_top1,
    top1_agreement,
)
from atri.training.evaluation.study_report import render_markdown, summarise
from atri.training.evaluation.study_stats import resampling_units
from atri.training.fileio import atomic_write_text
from atri.training.languages import LANGS
from atri.training.objectives.sampling import CaptionTable
from atri.training.objectives.strategies import draw_epoch

log = logging.getLogger("study")


@dataclass(frozen=True)
class Arm:
    strategy: str
    budget: int = 1  # epoch budget as a multiple of --epochs
    steps_of: str | None = None  # scale the budget to this strategy's steps per epoch


ARMS: dict[str, Arm] = {
    "mlclap": Arm("mlclap"),
    "mlclap-mixture": Arm("mlclap-mixture", steps_of="mlclap"),
    "cacl": Arm("cacl"),
    "kcl": Arm("kcl"),
    "kcl-balanced": Arm("kcl-balanced"),
    "mlclap-x8": Arm("mlclap", 8),
    "kcl-x8": Arm("kcl", 8),
    "kcl-balanced-x8": Arm("kcl-balanced", 8),
}
FINETUNED = "+ft"


def arm_epochs(arm: Arm, epochs: int, table: CaptionTable, batch: int) -> int:
    """The arm's epoch budget; with `steps_of`, the epochs whose optimiser steps match
    `budget * epochs` epochs of that strategy (measured on epoch 0's draw)."""
    budget = arm.budget * epochs
    if arm.steps_of is None:
        return budget
    ours = draw_epoch(arm.strategy, table, 0, 0).n_batches(batch)
    theirs = draw_epoch(arm.steps_of, table, 0, 0).n_batches(batch)
    return max(1, round(budget * theirs / ours))


def train_command(corpus: Path, run: Path, strategy: str, epochs: int, seed: int,
                  args: argparse.Namespace, extra: list[str]) -> list[str]:
    return [
        "atri", "train", "--train", str(corpus / "train.jsonl"), "--val",
        str(corpus / "val.jsonl"), "--strategy", strategy, "--out", str(run),
        "--epochs", str(epochs), "--patience", str(args.patience), "--seed", str(seed),
        "--batch-size", str(args.batch_size), "--cache-dir", str(args.cache_dir),
        *shlex.split(args.train_args), *extra,
    ]


def run_training(cmd: list[str], run: Path, in_process: bool = False) -> None:
    """Each run in a fresh process, so its peak RSS is its own (it only grows), unless
    `in_process` (no start-up cost per run; the peak RSS column is then the study's)."""
    status = run / "run.json"
    if status.is_file() and json.loads(status.read_text()).get("status") == "done":
        return
    if (run / "config.json").is_file():
        cmd = [*cmd[:2], "--out", str(run), "--resume", *cache_flag(cmd)]
    log.info("%s", " ".join(cmd))
    if in_process:
        from atri.commands.train import main as train_main

        if train_main(cmd[2:]) != 0:
            raise RuntimeError(f"training failed: {' '.join(cmd)}")
        return
    exe = str(Path(sys.executable).parent / "atri")
    subprocess.run([exe, *cmd[1:]], check=True)


def cache_flag(cmd: list[str]) -> list[str]:
    i = cmd.index("--cache-dir")
    return cmd[i : i + 2]


def test_splits(corpus: Path) -> list[str]:
    """Every test split the corpus has (test, test-xfont, test-unseen; test-xpkg, ...)."""
    return sorted(p.stem for p in corpus.glob("test*.jsonl"))


def query_units(manifest: Manifest) -> np.ndarray:
    """(N,) resampling unit of each clip: minimal-pair cluster and melody joined
    (study_stats.resampling_units), or the real-recordings corpus's group (takes of one
    source); a manifest with none of them resamples clips."""
    clusters = [str(r.meta.get("cluster") or r.meta.get("group") or "") for r in manifest]
    melodies = [str(r.meta.get("melody") or "") for r in manifest]
    if not any(clusters) and not any(melodies):
        return np.arange(len(manifest))
    return resampling_units(clusters, melodies)


def evaluate_split(model, manifest: Manifest, langs: list[str], cache_dir: Path) -> tuple:
    """(metrics, per-query arrays): metrics.json-style aggregates plus what the cluster
    bootstrap resamples; each array's mean over its queries is the run's value."""
    audio, text, present, captions = embed_manifest(model, manifest, langs, cache_dir=cache_dir)
    metrics = evaluate_embeddings(audio, text, present, captions=captions)
    langs = list(text)
    t2a = np.stack([t2a_ranks(audio, text[x], present[x], captions=captions[x])
                    for x in langs])  # (L, N, C); clips sharing the caption are not rivals
    a2t = np.stack([a2t_counts(audio, text[x], present[x])[:, 0] + 1 for x in langs])  # (L, N)
    n, c = t2a.shape[1:]
    t2a_first = np.stack([t2a_top1(audio, text[x], present[x]) for x in langs])  # (L, N, C)
    a2t_first = np.stack([a2t_top1(audio, text[x], present[x]) for x in langs])  # (L, N)
    slots = t2a.reshape(len(langs), n * c)  # (L, N*C)
    units = query_units(manifest)  # (N,)
    arrays = {
        "t2a_R@1": np.nanmean(np.where(np.isnan(slots), np.nan, slots == 1), axis=0) * 100,
        "a2t_R@1": (a2t == 1).mean(axis=0) * 100,  # (N,)
        "mrv_var_t2a": slots.var(axis=0),
        "mrv_var_a2t": a2t.var(axis=0),
        "agree_t2a": top1_agreement(t2a_first.reshape(len(langs), n * c)) * 100,
        "agree_a2t": top1_agreement(a2t_first) * 100,
        "logvar_t2a": log_rank_variance(slots),
        "logvar_a2t": log_rank_variance(a2t),
        "units_t2a": np.repeat(units, c),
        "units_a2t": units,
    }
    for name in ("agree_t2a", "agree_a2t", "logvar_t2a", "logvar_a2t"):
        metrics[name] = float(np.nanmean(arrays[name]))
    return metrics, arrays


def evaluate_run(run: Path, corpus: Path, cache_dir: Path) -> dict:
    """Metrics and per-query arrays of the run's best checkpoint on every test split
    (cached in RUN/eval/), and what the run trained on (its log)."""
    out: dict = {"metrics": {}, "arrays": {}}
    model = None
    langs = json.loads((run / "config.json").read_text())["langs"]
    for split in test_splits(corpus):
        meta, npz = run / "eval" / f"{split}.json", run / "eval" / f"{split}.npz"
        if not (meta.is_file() and npz.is_file()):
            if model is None:
                model, _ = load_checkpoint(run / "best")
            metrics, arrays = evaluate_split(
                model, read_manifest(corpus / f"{split}.jsonl"), langs, cache_dir)
            npz.parent.mkdir(exist_ok=True)
            tmp = npz.with_name(f".{npz.stem}.tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(npz)
            atomic_write_text(meta, json.dumps(metrics))
        out["metrics"][split] = json.loads(meta.read_text())
        out["arrays"][split] = dict(np.load(npz))
    out["train"] = training_record(run, corpus)
    return out


def training_record(run: Path, corpus: Path) -> dict:
    """What the run trained on, at its best epoch and when it stopped, and its curve."""
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    status = json.loads((run / "run.json").read_text())
    best = next(r for r in logs if r["epoch"] == status["best_epoch"])
    n_train = len(read_manifest(corpus / "train.jsonl", check_audio=False))
    return {
        "epochs_budget": status["epochs"],
        "epochs_run": status["epoch"],
        "early_stopped": bool(status.get("early_stopped")),
        "best_epoch": best["epoch"],
        "steps_best": best["step"],
        "caption_updates_best": best.get("caption_updates"),
        "audio_passes_best": best["audio_items"] / n_train if "audio_items" in best else None,
        "steps_run": logs[-1]["step"],
        "epoch_seconds": float(np.mean([r["train_seconds"] for r in logs])),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in logs),
        "curve": [[r["step"], r.get("caption_updates"), r["val_score"]] for r in logs],
    }


def plot_curves(corpus_results: dict, path: Path, title: str) -> None:
    """Validation score against optimiser steps and against caption updates, one colour
    per arm, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=100)
    colours = matplotlib.colormaps["tab10"].colors
    try:
        for k, (arm, runs) in enumerate(corpus_results["arms"].items()):
            colour = colours[k % len(colours)]
            style = "--" if arm.endswith(FINETUNED) or "x8" in arm else "-"
            for i, r in enumerate(runs):
                curve = np.array(r["train"]["curve"], dtype=float)  # (E, 3)
                for ax, x in zip(axes, (0, 1), strict=True):
                    ax.plot(curve[:, x], curve[:, 2], style, color=colour, linewidth=1,
                            marker=".", markersize=4, label=arm if i == 0 else None)
        for ax, label in zip(axes, ("optimiser steps", "caption updates"), strict=True):
            ax.set_xscale("log")
            ax.set_xlabel(label + " (log scale)")
            ax.set_ylabel("validation score (mean T2A/A2T R@1, %)")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png")
        tmp.replace(path)
    finally:
        plt.close(fig)


def run_corpus(corpus: Path, args: argparse.Namespace) -> dict:
    """Train and evaluate every arm x seed on one corpus; the raw per-run results."""
    out = args.out / corpus.name
    table = CaptionTable.from_manifest(
        read_manifest(corpus / "train.jsonl", check_audio=False), langs_of(args))
    variants = [("", [], args.arms, args.epochs)]
    if args.finetune:
        variants.append((FINETUNED, shlex.split(args.finetune), args.finetune_arms or args.arms,
                         args.finetune_epochs or args.epochs))
    results: dict = {"corpus": str(corpus), "splits": test_splits(corpus), "arms": {}}
    for suffix, flags, names, budget in variants:
        for name in names:
            arm = ARMS[name]
            epochs = arm_epochs(arm, budget, table, args.batch_size)
            runs = []
            for seed in args.seeds:
                run = out / "runs" / f"{name}{suffix}-s{seed}"
                extra = list(flags)
                if suffix and args.finetune_from:  # the frozen arm's run of the same seed
                    start = out / "runs" / f"{args.finetune_from}-s{seed}" / "best"
                    extra += ["--init-from", str(start)]
                cmd = train_command(corpus, run, arm.strategy, epochs, seed, args, extra)
                run_training(cmd, run, args.in_process)
                runs.append({"seed": seed, "command": " ".join(cmd),
                             **evaluate_run(run, corpus, args.cache_dir)})
            results["arms"][name + suffix] = runs
    return results


def langs_of(args: argparse.Namespace) -> list[str]:
    """The training languages `--train-args` sets, else all 8."""
    words = shlex.split(args.train_args)
    if "--langs" in words:
        return words[words.index("--langs") + 1].split(",")
    return list(LANGS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, nargs="+", required=True,
                   help="one or more corpora (independent seeds, not nested sizes)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=40, help="epoch budget of a 1x arm")
    p.add_argument("--patience", type=int, default=5,
                   help="early stopping: epochs without a better validation score")
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--train-args", default="", help="more `atri train` flags for every run")
    p.add_argument("--finetune", default="",
                   help="`atri train` flags of a fine-tuned text tower: every arm runs again "
                        f"with them, as ARM{FINETUNED}")
    p.add_argument("--finetune-arms", nargs="+", choices=list(ARMS),
                   help="the arms run again with --finetune (default: every arm of --arms); "
                        "a fine-tuned step costs far more than a frozen one")
    p.add_argument("--finetune-from", choices=list(ARMS),
                   help="start every fine-tuned run from the heads of this frozen arm's run "
                        "of the same seed (a second stage: the tower is tuned from converged "
                        "heads, so the fine-tuned arms differ only in their strategy)")
    p.add_argument("--finetune-epochs", type=int,
                   help="epoch budget of a 1x fine-tuned arm (default: --epochs)")
    p.add_argument("--bootstrap", type=int, default=2000, help="cluster-bootstrap resamples")
    p.add_argument("--in-process", action="store_true",
                   help="train in this process (fast for tiny corpora; peak RSS is then shared)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache/atri/features")
    args = p.parse_args(argv)
    if len(args.seeds) < 2:
        p.error("--seeds: Welch's test needs at least 2 seeds per arm")
    if "mlclap" not in args.arms:
        p.error("--arms: the baseline mlclap is needed (every difference is to it)")
    if args.finetune_arms and "mlclap" not in args.finetune_arms:
        p.error("--finetune-arms: the baseline mlclap is needed (every difference is to it)")
    for flag in ("finetune_arms", "finetune_from", "finetune_epochs"):
        if getattr(args, flag) and not args.finetune:
            p.error(f"--{flag.replace('_', '-')} needs --finetune (the flags of the fine-tuned "
                    "tower)")
    if args.finetune_from and args.finetune_from not in args.arms:
        p.error(f"--finetune-from: {args.finetune_from} is not among --arms (its runs are the "
                "starts)")
    names = [c.name for c in args.corpus]
    if len(set(names)) != len(names):
        p.error(f"--corpus: folder names must differ (they name the output): {names}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(1)
    corpora = {}
    for corpus in args.corpus:
        raw = run_corpus(corpus, args)
        plot_curves(raw, args.out / f"curves-{corpus.name}.png",
                    f"{corpus.name}: validation score per arm and seed")
        corpora[corpus.name] = summarise(raw, n_bootstrap=args.bootstrap)
    summary = {"seeds": args.seeds, "epochs": args.epochs, "patience": args.patience,
               "batch_size": args.batch_size, "train_args": args.train_args,
               "finetune": args.finetune, "corpora": corpora}
    atomic_write_text(args.out / "results.json", json.dumps(summary, indent=1))
    text = render_markdown(summary)
    atomic_write_text(args.out / "results.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
