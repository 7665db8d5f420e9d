"""DDP: the loss and gradients of a global batch split over two gloo processes are those
of one process holding it all, for every strategy (a stub model on cached features; the
end-to-end torchrun run is in test_train.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atri.training.encoders.model import ModelConfig, build_model
from atri.training.objectives.strategies import NAMES as STRATEGIES
from atri.training.objectives.strategies import get_strategy


class StubText:
    """A frozen text encoder stand-in (the step under test reads cached text features)."""

    name, version, dim, trainable = "stub", "1", 16, False

    def encode(self, texts: list[str], lang: str) -> torch.Tensor:
        raise AssertionError("cached features only")


def stub_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(audio="ced-tiny", embed_dim=32), pretrained=False,
                       text_encoder=StubText())


def global_batch(strategy: str, n: int = 8) -> dict[str, torch.Tensor]:
    """Random cached features of a global batch, with absent KCL slots and a mixture
    batch that holds clips twice."""
    g = torch.Generator().manual_seed(3)
    slots = get_strategy(strategy).slots(3)
    present = torch.ones(n, slots, dtype=torch.bool)
    if slots == 3:
        present[1, 0] = present[4, 2] = present[6, 1] = False
    return {
        "audio": torch.randn(n, 192, generator=g),
        "text": torch.randn(n, slots, StubText.dim, generator=g),
        "present": present,
        "clip_ids": torch.tensor([0, 1, 2, 0, 3, 4, 1, 5][:n]),
    }


def local_batch(whole: dict[str, torch.Tensor], rank: int, world: int):
    from atri.training.batches import LocalBatch

    b = len(whole["audio"]) // world
    part = slice(rank * b, (rank + 1) * b)
    present = whole["present"][part]
    rows, cols = torch.nonzero(present, as_tuple=True)
    return LocalBatch(
        audio=whole["audio"][part], text=whole["text"][part][rows, cols],
        slots=torch.stack([rows, cols], dim=1), present_local=present,
        present=whole["present"], clip_ids=whole["clip_ids"],
        local_clips=whole["clip_ids"][part].tolist(),
    )


def step_grads(strategy: str, rank: int, world: int) -> tuple[float, dict[str, torch.Tensor]]:
    from atri.training.step_loss import StepLoss

    model = stub_model()
    step = StepLoss(model, get_strategy(strategy), world)
    if world > 1:
        step = torch.nn.parallel.DistributedDataParallel(step)
    loss = step(local_batch(global_batch(strategy), rank, world))
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        results = {s: step_grads(s, rank, world) for s in STRATEGIES}
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ddp_step_equals_one_process_step(tmp_path: Path) -> None:
    """Two forked gloo ranks, 4 items each: the loss and the gradients (after DDP's
    averaging) are those of one process with all 8 items, for every strategy."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    out = str(tmp_path / "grads")
    procs = [ctx.Process(target=ddp_worker, args=(r, 2, str(tmp_path / "init"), out))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    for strategy in STRATEGIES:
        loss, grads = step_grads(strategy, 0, 1)
        for rank in ranks:
            ddp_loss, ddp_grads = rank[strategy]
            assert ddp_loss == pytest.approx(loss, rel=1e-6), strategy
            assert grads.keys() == ddp_grads.keys()
            for name, grad in grads.items():
                torch.testing.assert_close(ddp_grads[name], grad, rtol=1e-5, atol=1e-7,
                                           msg=f"{strategy} {name}")
