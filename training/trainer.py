"""The training loop of `atri train`: one function, `train(config, options)`.

Per epoch: the strategy's seeded plan (sampling.py) is cut into global batches of
`batch_size` items; under torchrun each rank embeds its own slice of every batch and
every rank computes the loss of the whole global batch (step_loss.py), so the
contrastive batch does not depend on the number of processes. Then rank 0 validates
(metrics.evaluate_embeddings, metrics.validation_score), saves RUN_DIR/best when the
score improves and RUN_DIR/last with the state to resume, and writes the log. Other
ranks never write. A time budget or a signal stops the run at a step boundary
(stopper.py).

With `patience` > 0 the run ends early once the validation score has not improved for
that many epochs (run.json says "early_stopped"); the schedule is still that of
`epochs`, so the learning rate had not decayed to 0.

Frozen backbones: features come from the on-disk caches (features.py) and only the heads
and the temperature train. A trainable one sees live audio (or text) every step.

Optimiser (optim.py): AdamW; weight decay on weight matrices only (not the temperature,
biases or norm gains); linear warmup then cosine decay to 0 (or, `lr_schedule`
"constant", the peak after one epoch of warmup), a pure function of the step, so a
resumed run follows the same curve; gradient clipping by global norm.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from atri.training.batches import LocalBatch, TrainData, ValData
from atri.training.config import CONFIG_FILE, ConfigError, RunOptions, TrainConfig
from atri.training.distributed import Dist, autocast, init_distributed, peak_memory
from atri.training.encoders.checkpoint import load_checkpoint, save_checkpoint
from atri.training.encoders.model import RetrievalModel, build_model
from atri.training.evaluation.metrics import validation_score
from atri.training.fileio import atomic_write, atomic_write_text, swap_dir
from atri.training.init_from import init_heads
from atri.training.objectives.sampling import CaptionTable, EpochPlan
from atri.training.objectives.strategies import draw_epoch, get_strategy
from atri.training.optim import lr_factor, param_groups
from atri.training.progress import Progress
from atri.training.step_loss import StepLoss
from atri.training.stopper import Stopper

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
STATE_FORMAT = 1
LOG_FILE = "log.jsonl"
STATUS_FILE = "run.json"


class _Quiet:
    """Progress of the ranks other than 0: one display per job."""

    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _fresh_state() -> dict[str, Any]:
    return {
        "format": STATE_FORMAT, "epoch": 0, "batch": 0, "step": 0,
        "best_score": None, "best_epoch": None, "history": [],
        "loss_sum": 0.0, "loss_batches": 0, "seconds": 0.0, "clips_seen": [],
    }


def start_model(
    config: TrainConfig, options: RunOptions, d: Dist
) -> tuple[RetrievalModel, dict[str, Any], bool]:
    """(model, loop state, resumed): from RUN_DIR/last when resuming a run that saved
    one, else built fresh from the seed (and `init_from`'s heads)."""
    last = Path(options.out) / "last"
    torch.manual_seed(config.seed)
    resumed = options.resume and (last / STATE_FILE).is_file()
    if resumed:
        model, info = load_checkpoint(last, device=d.device)
        state = torch.load(last / STATE_FILE, map_location="cpu", weights_only=True)
        check_resumable(last, state, info, config)
    else:
        model, state = build_model(config.model, device=d.device), _fresh_state()
        if config.init_from:
            init_heads(model, config.init_from)
    if config.freeze_text_head:
        model.text_head.requires_grad_(False)
    return model, state, resumed


def check_resumable(
    last: Path, state: dict[str, Any], info: dict[str, Any], config: TrainConfig
) -> None:
    """ConfigError unless RUN_DIR/last's weights and state belong together and to `config`."""
    if state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{last / STATE_FILE}: unknown format {state.get('format')}")
    if info.get("step") != state["step"]:
        raise ConfigError(
            f"{last}: weights (step {info.get('step')}) and {STATE_FILE} "
            f"(step {state['step']}) do not belong together"
        )
    # Through from_dict: a run saved before a field existed holds its default.
    stored = info.get("training_config")
    if not isinstance(stored, dict) or TrainConfig.from_dict(stored) != config:
        raise ConfigError(f"{last} was trained with another configuration")


def draw_plans(config: TrainConfig, table: CaptionTable) -> list[EpochPlan]:
    """Every epoch's plan; ConfigError when an epoch holds less than one batch."""
    strategy = get_strategy(config.strategy)
    plans = [draw_epoch(strategy, table, config.seed, e, config.mixture_prob)
             for e in range(config.epochs)]
    if min(p.n_batches(config.batch_size) for p in plans) == 0:
        raise ConfigError(
            f"batch_size {config.batch_size} exceeds the {min(map(len, plans))} items of an epoch"
        )
    return plans


def make_optimizer(
    model: RetrievalModel, config: TrainConfig, d: Dist
) -> tuple[torch.optim.Optimizer, torch.amp.GradScaler]:
    """AdamW over param_groups (optim.py) and the fp16 loss scaler (CUDA without bf16)."""
    fp16 = d.device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.optim.AdamW(param_groups(model, config)), torch.amp.GradScaler(
        "cuda", enabled=fp16)


class Run:
    """The state of one training process; `train` drives it."""

    def __init__(self, config: TrainConfig, options: RunOptions, d: Dist) -> None:
        self.config, self.options, self.d = config, options, d
        self.out = Path(options.out)
        self.last = self.out / "last"
        self.model, self.state, resumed = start_model(config, options, d)
        if config.batch_size % d.world:
            raise ConfigError(f"batch_size {config.batch_size} is not a multiple of the "
                              f"{d.world} processes")
        self.train_data = TrainData(config, options, self.model, d.main, d.barrier)
        self.plans = draw_plans(config, self.train_data.table)
        self.total_steps = sum(p.n_batches(config.batch_size) for p in self.plans)
        self.epoch_steps = self.plans[0].n_batches(config.batch_size)  # constant's warmup
        self.val_data = ValData(config, options, self.model) if d.main else None
        if d.main and not resumed:  # once the inputs proved readable
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / CONFIG_FILE, json.dumps(config.to_dict(), indent=2))
        self.step_loss: nn.Module = StepLoss(self.model, get_strategy(config.strategy), d.world,
                                             options.grad_cache, self.train_data.prototypes)
        if d.world > 1:
            self.step_loss = nn.parallel.DistributedDataParallel(self.step_loss)
        self.optimizer, self.scaler = make_optimizer(self.model, config, d)
        if resumed:
            self._restore()

    def _restore(self) -> None:
        """The optimiser, scaler and RNG states of the resumed run."""
        state = self.state
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.d.device)
        log.info("resuming %s at epoch %d batch %d (step %d)", self.out,
                 state["epoch"] + 1, state["batch"], state["step"])

    # --- one epoch -------------------------------------------------------------------

    def run_epoch(self, stopper: Stopper) -> bool:
        """Train the current epoch from its current batch; False if stopped before its end."""
        config, d, state = self.config, self.d, self.state
        epoch, start_batch = state["epoch"], state["batch"]
        plan = self.plans[epoch]
        n_batches = plan.n_batches(config.batch_size)
        started = time.monotonic() - state["seconds"]
        seen = set(state["clips_seen"]) if d.main else set()  # rank 0's, if resumed
        self.model.train()
        desc = f"epoch {epoch + 1}/{config.epochs}"
        bar = Progress(n_batches - start_batch, desc, "batch") if d.main else _Quiet()
        batches = self.train_data.batches(plan, start_batch, config.batch_size, d.rank, d.world,
                                          epoch)
        with bar:
            for index, batch in batches:
                loss = self.step(batch)
                seen.update(batch.local_clips)
                state["loss_sum"] += loss
                state["loss_batches"] += 1
                state["batch"] = index + 1
                bar.update()
                if index + 1 < n_batches and stopper.should_stop(d):
                    state["seconds"] = time.monotonic() - started
                    state["clips_seen"] = sorted(seen)
                    return False
        state["seconds"] = time.monotonic() - started
        state["clips_seen"] = sorted(seen)
        return True

    def step(self, batch: LocalBatch) -> float:
        """One optimiser step on `batch` (learning-rate schedule, loss, clipping); its loss."""
        config, d = self.config, self.d
        factor = lr_factor(self.state["step"], self.total_steps, config.warmup,
                           config.lr_schedule, self.epoch_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(d):
            loss = self.step_loss(batch.to(d.device))
        self.scaler.scale(loss).backward()
        if config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state["step"] += 1
        return float(loss.detach())

    # --- end of epoch ------------------------------------------------------------------

    def finish_epoch(self) -> None:
        """Validate, save best and last, log; then the state points at the next epoch."""
        state, d = self.state, self.d
        seen = self._clips_per_rank(state["clips_seen"])
        if d.main:
            val_start = time.monotonic()
            assert self.val_data is not None  # rank 0 holds it
            metrics = self.val_data.evaluate(self.model)
            score = validation_score(metrics)
            val_seconds = time.monotonic() - val_start
            best = state["best_score"] is None or score > state["best_score"]
            epoch = state["epoch"] + 1
            audio_items, captions = (sum(v) for v in zip(
                *(p.exposure(self.config.batch_size) for p in self.plans[:epoch]), strict=True))
            record = {
                "epoch": epoch, "step": state["step"],
                "audio_items": audio_items, "caption_updates": captions,
                "loss": state["loss_sum"] / max(1, state["loss_batches"]),
                "lr": self.optimizer.param_groups[0]["lr"], "tau": self.model.tau().item(),
                "seconds": round(state["seconds"] + val_seconds, 3),
                "train_seconds": round(state["seconds"], 3),
                "val_seconds": round(val_seconds, 3),
                "val_score": score, "best": best,
                "world_size": d.world,
                "clips_per_rank": [len(s) for s in seen],
                "clips_on_several_ranks": _shared(seen),
                **peak_memory(d),
                "val": metrics,
            }
            if best:
                state["best_score"], state["best_epoch"] = score, epoch
                save_checkpoint(self.model, self.out / "best", **self._meta(epoch, metrics))
            state["history"].append(record)
            log.info("epoch %d: loss %.4f, val score %.2f%s, tau %.4f, %.1f s", epoch,
                     record["loss"], score, " (best)" if best else "", record["tau"],
                     record["seconds"])
        state.update(epoch=state["epoch"] + 1, batch=0, loss_sum=0.0, loss_batches=0,
                     seconds=0.0, clips_seen=[])
        state["early_stopped"] = self._patience_ran_out(d)
        self.save_last(done=state["epoch"] == self.config.epochs or state["early_stopped"])
        d.barrier()

    def _patience_ran_out(self, d: Dist) -> bool:
        """Rank 0 alone validates; every rank must agree to stop."""
        patience, best = self.config.patience, self.state["best_epoch"]
        out = bool(patience and d.main and self.state["epoch"] - best >= patience)
        if d.world > 1:
            flag = torch.tensor([out], dtype=torch.int32, device=d.device)
            dist.broadcast(flag, src=0)
            out = bool(flag.item())
        return out

    def _clips_per_rank(self, clips: list[int]) -> list[set[int]]:
        if self.d.world == 1:
            return [set(clips)]
        gathered: list[Any] = [None] * self.d.world
        dist.all_gather_object(gathered, clips)
        return [set(c) for c in gathered]

    def _meta(self, epoch: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
        out = {"training_config": self.config.to_dict(), "step": self.state["step"],
               "epoch": epoch, "metrics": {}}
        if metrics is not None:
            out["metrics"] = {"val_score": validation_score(metrics), "val": metrics}
        return out

    def save_last(self, done: bool = False, reason: str | None = None) -> None:
        """RUN_DIR/last = checkpoint + train_state.pt, swapped in as one directory."""
        if not self.d.main:
            return
        state = self.state
        state.update(
            optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(self.d.device) if torch.cuda.is_available() else None,
        )
        staging = self.out / ".last.next"
        save_checkpoint(self.model, staging, **self._meta(state["epoch"], None))
        atomic_write(staging / STATE_FILE, lambda f: torch.save(state, f))
        swap_dir(staging, self.last)
        history = state["history"]
        atomic_write_text(self.out / LOG_FILE, "".join(json.dumps(r) + "\n" for r in history))
        status = "done" if done else ("stopped" if reason else "running")
        atomic_write_text(self.out / STATUS_FILE, json.dumps({
            "status": status, "reason": reason, "epoch": state["epoch"], "batch": state["batch"],
            "step": state["step"], "epochs": self.config.epochs,
            "early_stopped": bool(state.get("early_stopped")),
            "best_epoch": state["best_epoch"], "best_score": state["best_score"],
        }, indent=2))


def _shared(seen: list[set[int]]) -> int:
    """Clips that more than one rank trained on in the epoch."""
    counts: dict[int, int] = {}
    for clips in seen:
        for clip in clips:
            counts[clip] = counts.get(clip, 0) + 1
    return sum(1 for c in counts.values() if c > 1)


def train(config: TrainConfig, options: RunOptions) -> str:
    """Train (or continue) the run in `options.out`; returns a one-line status."""
    started = time.monotonic()
    d = init_distributed(options.world_size, options.local_rank)
    try:
        run = Run(config, options, d)
        if run.state["epoch"] >= config.epochs or run.state.get("early_stopped"):
            return f"{options.out} is complete ({run.state['epoch']} epochs); nothing to do"
        with Stopper(options.max_minutes, started) as stopper:
            while run.state["epoch"] < config.epochs and not run.state.get("early_stopped"):
                finished = run.run_epoch(stopper)
                if finished:
                    run.finish_epoch()
                if not finished or (run.state["epoch"] < config.epochs
                                    and not run.state.get("early_stopped")
                                    and stopper.should_stop(d)):
                    run.save_last(reason=stopper.reason)
                    d.barrier()
                    s = run.state
                    return (f"stopped ({stopper.reason}) in epoch {s['epoch'] + 1} at batch "
                            f"{s['batch']}; continue with --resume")
        s = run.state
        if not d.main:
            return "done"
        early = f" (early stop: patience {config.patience})" if s.get("early_stopped") else ""
        return (f"done: {s['epoch']} epochs{early}, best epoch {s['best_epoch']} (validation "
                f"score {s['best_score']:.2f}) in {Path(options.out) / 'best'}")
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

