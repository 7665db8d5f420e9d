"""Training cost per strategy (our ATRI Table 4): peak memory and time of one optimiser step.

Each (setting, strategy) is measured in a fresh process, since peak RSS only grows within
one (shared spec metrics.md, study protocol). Two settings:

- `cached`: the default embedded configuration, aisfx (512-d) + e5-small (384-d), both
  frozen, so a step runs only the heads and the temperature on cached features. The
  cached features are random tensors of the right shapes: the cost is the step, not the data.
- `text`: a trainable `hf:<dir>` text tower, a randomly initialised BERT this script builds
  and saves (6 layers, 384-d by default: a small real encoder's size), on real captions of
  the demo corpus, so KCL's K caption forwards and backwards weigh as in the paper. The
  audio side stays frozen and cached (a trainable audio tower would add the same cost to
  every strategy: each sees B clips per step).

Every step goes through the trainer's own code: the strategy's epoch plan
(`sampling.draw_epoch`), batches cut by `batches.TrainData.batches`, `trainer.StepLoss`
(model heads, text tower, `losses.LOSSES`) and `trainer.Run._step` (lr schedule, AdamW,
gradient clipping). Per process it reports

- `rss_setup_mb`: resident memory before the first step (runtime, model, data),
- `peak_rss_mb`: peak resident memory during the steps (the kernel's high-water mark is
  reset after setup through /proc/self/clear_refs, so loading transients do not count),
- `step_rss_mb` = peak_rss_mb - rss_setup_mb: what training adds (gradients, AdamW state,
  activations),
- `saved_activations_mb`: bytes autograd saves for backward in one step, parameters
  excluded (torch.autograd.graph.saved_tensors_hooks): the term that dominates ATRI's
  GPU memory, and independent of the machine's load,
- `step_ms_median`: median wall time of `--steps` steps after `--warmup` steps.

    .venv/bin/python bench/train_cost.py --out bench/results/train_cost.json
    .venv/bin/python bench/train_cost.py --quick --strategies mlclap,kcl --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from atri.training.batches import Captions, LocalBatch, TrainData
from atri.training.corpus.plan import plan_train
from atri.training.corpus.schema import LANGS
from atri.training.distributed import Dist
from atri.training.model import ModelConfig, RetrievalModel, build_model
from atri.training.sampling import CaptionTable, draw_epoch
from atri.training.train import TrainConfig
from atri.training.trainer import Run, StepLoss, param_groups

STRATEGIES = ("mlclap", "mlclap-mixture", "cacl", "kcl", "kcl-balanced")
SETTINGS = ("cached", "text")
PAPER = {  # ATRI Table 4, AudioCaps, 8 languages, GPU: memory (GB) and training time (s)
    "mlclap": {"gpu_memory_gb": 22.2, "seconds": 3349},
    "cacl": {"gpu_memory_gb": 26.8, "seconds": 3745},
    "kcl": {"gpu_memory_gb": 68.3, "seconds": 4209},
}
RATIO_KEYS = ("step_ms_median", "peak_rss_mb", "step_rss_mb", "saved_activations_mb")
CHILD_TIMEOUT = 1800  # seconds per measured process


@dataclass(frozen=True)
class Tower:
    """The randomly initialised BERT of the `text` setting."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int  # padded with unused tokens to this size (embedding + its AdamW state)


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
                    {"cached": Budget(10, 100), "text": Budget(2, 6)}),
    "quick": Profile(8, 32, Tower(layers=2, hidden=64, heads=4, intermediate=128, vocab=2000),
                     {"cached": Budget(1, 3), "text": Budget(1, 2)}),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny tower, B=8, 2-3 steps")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated: cached,text")
    p.add_argument("--batch-size", type=int, help="contrastive batch B (default 24; quick 8)")
    p.add_argument("--k", type=int, default=8, help="training languages K (the first K)")
    p.add_argument("--layers", type=int, help="text tower layers (default 6; quick 2)")
    p.add_argument("--steps", type=int, help="timed steps per process (default: per setting)")
    p.add_argument("--warmup", type=int, help="untimed steps first, >= 1 (default: per setting)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (1: with 2 threads a busy 2-core machine ran "
                        "the steps 4-10x slower, OpenMP workers waiting on each other)")
    p.add_argument("--out", type=Path, default=Path("bench/results/train_cost.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # JSON job: one measurement, this process
    return p


# --- captions and the text tower --------------------------------------------------------


def demo_captions(n: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """Captions of n training clips of the demo corpus (planned, not rendered)."""
    return [p.captions for p in plan_train(n, random.Random(f"{seed}:train"), "tr")]


def make_tower(folder: Path, tower: Tower, captions: list[dict[str, list[str]]]) -> Path:
    """A random BERT saved like a hub model, with a WordPiece vocab of the captions' words
    (BERT's own normalisation and pre-tokenisation) and single characters, padded to
    `tower.vocab` entries."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertConfig, BertModel, BertTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    normalise, split = BertNormalizer(lowercase=True), BertPreTokenizer()
    texts = [t for clip in captions for lang_texts in clip.values() for t in lang_texts]
    words = {w for t in texts for w, _ in split.pre_tokenize_str(normalise.normalize_str(t))}
    chars = sorted({c for w in words for c in w})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = list(dict.fromkeys([*specials, *sorted(words), *chars, *(f"##{c}" for c in chars)]))
    vocab += [f"[unused{i}]" for i in range(max(0, tower.vocab - len(vocab)))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=tower.hidden,
                        num_hidden_layers=tower.layers, num_attention_heads=tower.heads,
                        intermediate_size=tower.intermediate, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def tokens_per_caption(folder: Path, captions: list[dict[str, list[str]]]) -> dict[str, float]:
    """Mean tokens per caption ([CLS] and [SEP] included), per language."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    out = {}
    for lang in captions[0]:
        ids = tokenizer([t for clip in captions for t in clip[lang]])["input_ids"]
        out[lang] = round(statistics.mean(map(len, ids)), 1)
    return out


# --- one measurement, in its own process -------------------------------------------------


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since start or last reset) of this process, MiB."""
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", text)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1)) / 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False if not allowed here."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def synthetic_data(model: RetrievalModel, langs: tuple[str, ...],
                   captions: list[dict[str, list[str]]]) -> TrainData:
    """A `TrainData` over random cached audio features and the given captions (with random
    cached text features, unless the text tower trains). `TrainData.__init__` reads a
    manifest and the feature caches; the fields it would set are filled here instead."""
    n, k, c = len(captions), len(langs), len(captions[0][langs[0]])
    rows = np.arange(k * n * c).reshape(k, n, c).transpose(1, 0, 2)  # (N, K, C), lang-major
    texts = [t for lang in langs for clip in captions for t in clip[lang]]  # (T,)
    vectors = None
    if not model.config.text_trainable:
        vectors = F.normalize(torch.randn(len(texts), model.text_dim), dim=-1)  # (T, 384)
    data = TrainData.__new__(TrainData)
    data.table = CaptionTable(langs, np.full(n, c), np.ones((n, k), dtype=bool))
    data.audio = torch.randn(n, model.audio_dim)  # (N, 512)
    data.captions = Captions(langs, np.ascontiguousarray(rows), texts,
                             np.repeat(np.arange(k), n * c), vectors)
    data.workers = 0
    return data


def bare_run(config: TrainConfig, model: RetrievalModel, total_steps: int) -> Run:
    """The trainer's `Run` holding what `Run._step` uses, without `Run.__init__` (which
    reads manifests, writes a run directory and draws every epoch)."""
    run = Run.__new__(Run)
    run.config, run.model, run.total_steps = config, model, total_steps
    run.d = Dist(rank=0, world=1, device=torch.device("cpu"))
    run.state = {"step": 0}
    run.step_loss = StepLoss(model, config.strategy, world=1)
    run.optimizer = torch.optim.AdamW(param_groups(model, config))
    run.scaler = torch.amp.GradScaler("cuda", enabled=False)
    return run


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward, parameters excluded."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._seen: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._params:
            self._seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    @property
    def mb(self) -> float:
        return sum(self._seen.values()) / 2**20


def _setup(job: dict[str, Any]) -> tuple[RetrievalModel, Run, list[LocalBatch]]:
    """The model, the trainer's step and `warmup + steps` batches of one (setting, strategy)."""
    if job["setting"] == "text":
        model_config = ModelConfig(text=f"hf:{job['tower_dir']}", text_trainable=True)
    else:
        model_config = ModelConfig()  # aisfx + e5-small, frozen: the default
    config = TrainConfig(strategy=job["strategy"], train="(synthetic)", val="(synthetic)",
                         model=model_config, langs=tuple(job["langs"]),
                         batch_size=job["batch_size"])
    model = build_model(model_config)
    data = synthetic_data(model, config.langs, demo_captions(job["clips"]))
    plan = draw_epoch(config.strategy, data.table, config.seed, 0, config.mixture_prob)
    epoch = [batch for _, batch in data.batches(plan, 0, config.batch_size, 0, 1)]
    n_steps = job["warmup"] + job["steps"]
    return model, bare_run(config, model, n_steps), [epoch[i % len(epoch)] for i in range(n_steps)]


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Set one (setting, strategy) up, then step: the first step counts the saved
    activations, the first `warmup` are untimed, the `steps` after them timed."""
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    model, run, batches = _setup(job)
    model.train()
    setup_peak, rss_setup = _status_mb("VmHWM"), _status_mb("VmRSS")
    peak_reset = _reset_peak()
    with SavedBytes(model) as saved:
        losses = [run._step(batches[0])]
    times = []
    for i, batch in enumerate(batches[1:], start=1):
        start = time.perf_counter()
        losses.append(run._step(batch))
        if i >= job["warmup"]:
            times.append(1000 * (time.perf_counter() - start))
    peak = _status_mb("VmHWM")
    texts = [b.text.shape[0] if isinstance(b.text, torch.Tensor)
             else sum(len(t) for _, t in b.text) for b in batches]
    memory = {"rss_setup_mb": rss_setup, "peak_rss_mb": peak, "step_rss_mb": peak - rss_setup,
              "setup_peak_rss_mb": setup_peak, "saved_activations_mb": saved.mb}
    return {
        "setting": job["setting"], "strategy": job["strategy"],
        "texts_per_step": statistics.mean(texts),
        "trainable_params_m": round(sum(p.numel() for p in model.parameters()
                                        if p.requires_grad) / 1e6, 2),
        **{key: round(value, 1) for key, value in memory.items()}, "peak_reset": peak_reset,
        "warmup": job["warmup"], "steps": len(times),
        "step_ms_median": round(statistics.median(times), 2),
        "step_ms_min": round(min(times), 2), "step_ms_max": round(max(times), 2),
        "loss_first": losses[0], "loss_last": losses[-1],
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


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
    """Per setting and strategy, each cost over mlclap's in the same setting."""
    base = {r["setting"]: r for r in runs if r["strategy"] == "mlclap"}
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for run in runs:
        if (ref := base.get(run["setting"])) is not None:
            out.setdefault(run["setting"], {})[run["strategy"]] = {
                key: round(run[key] / ref[key], 2) if ref[key] else None for key in RATIO_KEYS}
    return out


def paper_ratios() -> dict[str, dict[str, float]]:
    base = PAPER["mlclap"]
    return {s: {k: round(v / base[k], 2) for k, v in row.items()} for s, row in PAPER.items()}


def table(result: dict[str, Any]) -> str:
    rows = ["| setting | strategy | texts/step | ms/step (median) | x | peak RSS MB | x "
            "| step RSS MB | x | saved activations MB | x |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        x = result["ratios"].get(r["setting"], {}).get(r["strategy"], {})
        rel = [f"{x[k]:.2f}" if x.get(k) is not None else "" for k in RATIO_KEYS]
        rows.append(f"| {r['setting']} | {r['strategy']} | {r['texts_per_step']:.0f} "
                    f"| {r['step_ms_median']:.1f} | {rel[0]} | {r['peak_rss_mb']:.0f} "
                    f"| {rel[1]} | {r['step_rss_mb']:.0f} | {rel[2]} "
                    f"| {r['saved_activations_mb']:.1f} | {rel[3]} |")
    return "\n".join(rows)


def _machine(threads: int, load_before: tuple[float, ...]) -> dict[str, Any]:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def run_all(args: argparse.Namespace, profile: Profile, tower: Tower,
            base: dict[str, Any]) -> dict[str, Any]:
    """Every (setting, strategy) asked for, each in a fresh process, one after the other."""
    runs, token_stats = [], None
    with tempfile.TemporaryDirectory(prefix="atri-train-cost-") as tmp:
        tower_dir = Path(tmp) / "bert-bench"
        if "text" in args.settings:
            captions = demo_captions(base["clips"])
            make_tower(tower_dir, tower, captions)
            token_stats = tokens_per_caption(tower_dir, captions)
        for setting in args.settings:
            budget = profile.budgets[setting]
            for strategy in args.strategies:
                runs.append(r := run_child({
                    **base, "setting": setting, "strategy": strategy,
                    "tower_dir": str(tower_dir), "warmup": max(1, args.warmup or budget.warmup),
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
        "settings": args.settings, **measured,
        "paper": {"table4": PAPER, "ratios": paper_ratios()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"\nload average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}; "
          f"{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
