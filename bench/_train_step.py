"""Helpers of bench/train_cost.py: one measurement, run in a fresh process (`--child`).

The model, the trainer's step (`step_loss.StepLoss`, `trainer.Run.step`) and batches of
one (setting, strategy), over synthetic cached features and the demo corpus's captions;
then the step's time, the process's resident memory and what autograd saves."""

from __future__ import annotations

import os
import random
import re
import statistics
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from atri.training.batches import Captions, LocalBatch, TrainData
from atri.training.config import TrainConfig
from atri.training.corpus.plan import plan_train
from atri.training.distributed import Dist
from atri.training.encoders.model import ModelConfig, RetrievalModel, build_model
from atri.training.objectives.sampling import CaptionTable
from atri.training.objectives.strategies import draw_epoch, get_strategy
from atri.training.optim import param_groups
from atri.training.step_loss import StepLoss
from atri.training.trainer import Run


def demo_captions(n: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """Captions of n training clips of the demo corpus (planned, not rendered)."""
    return [p.captions for p in plan_train(n, random.Random(f"{seed}:train"), "tr")]


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
    if not model.config.text_trains:
        vectors = F.normalize(torch.randn(len(texts), model.text_dim), dim=-1)  # (T, 384)
    data = TrainData.__new__(TrainData)
    data.table = CaptionTable(langs, np.full(n, c), np.ones((n, k), dtype=bool))
    data.audio = torch.randn(n, model.audio_dim)  # (N, 512)
    data.captions = Captions(langs, np.ascontiguousarray(rows), texts,
                             np.repeat(np.arange(k), n * c), vectors)
    data.workers = 0
    return data


def bare_run(config: TrainConfig, model: RetrievalModel, total_steps: int,
             grad_cache: int = 0) -> Run:
    """The trainer's `Run` holding what `Run.step` uses, without `Run.__init__` (which
    reads manifests, writes a run directory and draws every epoch)."""
    run = Run.__new__(Run)
    run.config, run.model, run.total_steps = config, model, total_steps
    run.epoch_steps = total_steps  # read by the constant schedule only
    run.d = Dist(rank=0, world=1, device=torch.device("cpu"))
    run.state = {"step": 0}
    run.step_loss = StepLoss(model, get_strategy(config.strategy), world=1,
                             grad_cache=grad_cache)
    run.optimizer = torch.optim.AdamW(param_groups(model, config))
    run.scaler = torch.amp.GradScaler("cuda", enabled=False)
    return run


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward, parameters excluded:
    `mb` all of them over the step, `peak_mb` the most held at once (a saved tensor is
    released when autograd drops it, e.g. once its part of backward ran; GradCache holds
    one chunk's at a time). A storage counts again when its address is saved anew after
    release: GradCache's chunks reuse the addresses the previous chunk freed."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._live: dict[int, int] = {}  # storage -> saved tensors holding it
        self._total = self._live_bytes = self._peak = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if ptr in self._params:
            return tensor
        if not self._live.get(ptr):
            self._total += nbytes
            self._live_bytes += nbytes
            self._peak = max(self._peak, self._live_bytes)
        self._live[ptr] = self._live.get(ptr, 0) + 1
        weakref.finalize(tensor, self._release, ptr, nbytes)  # autograd holds `tensor`
        return tensor

    def _release(self, ptr: int, nbytes: int) -> None:
        self._live[ptr] -= 1
        if not self._live[ptr]:
            self._live_bytes -= nbytes

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    @property
    def mb(self) -> float:
        return self._total / 2**20

    @property
    def peak_mb(self) -> float:
        return self._peak / 2**20


def _setup(job: dict[str, Any]) -> tuple[RetrievalModel, Run, list[LocalBatch]]:
    """The model, the trainer's step and `warmup + steps` batches of one (setting, strategy)."""
    tower = job["setting"].removesuffix("-gc")
    if tower == "text":
        model_config = ModelConfig(text=f"hf:{job['tower_dir']}", text_trainable=True)
    elif tower == "e5":
        model_config = ModelConfig(text="e5-small-torch", text_trainable_layers=job["e5_layers"])
    else:
        model_config = ModelConfig()  # aisfx + e5-small, frozen: the default
    # GradCache in chunks of B captions: ML-CLAP's graph size, whatever the strategy
    grad_cache = job["batch_size"] if job["setting"].endswith("-gc") else 0
    config = TrainConfig(strategy=job["strategy"], train="(synthetic)", val="(synthetic)",
                         model=model_config, langs=tuple(job["langs"]),
                         batch_size=job["batch_size"])
    model = build_model(model_config)
    data = synthetic_data(model, config.langs, demo_captions(job["clips"]))
    plan = draw_epoch(config.strategy, data.table, config.seed, 0, config.mixture_prob)
    epoch = [batch for _, batch in data.batches(plan, 0, config.batch_size, 0, 1)]
    n_steps = job["warmup"] + job["steps"]
    run = bare_run(config, model, n_steps, grad_cache)
    batches = [epoch[i % len(epoch)] for i in range(n_steps)]
    if tower == "e5":  # as past a run's first epoch: the frozen layers' outputs are cached
        with torch.no_grad():
            for batch in batches:
                for lang, texts in batch.text:
                    model.text_features(texts, lang)
    return model, run, batches


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
        losses = [run.step(batches[0])]
    times = []
    for i, batch in enumerate(batches[1:], start=1):
        start = time.perf_counter()
        losses.append(run.step(batch))
        if i >= job["warmup"]:
            times.append(1000 * (time.perf_counter() - start))
    peak = _status_mb("VmHWM")
    texts = [b.text.shape[0] if isinstance(b.text, torch.Tensor)
             else sum(len(t) for _, t in b.text) for b in batches]
    memory = {"rss_setup_mb": rss_setup, "peak_rss_mb": peak, "step_rss_mb": peak - rss_setup,
              "setup_peak_rss_mb": setup_peak, "saved_activations_mb": saved.mb,
              "saved_peak_mb": saved.peak_mb}
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
