"""Process-group set-up for `atri train` under torchrun (gloo on CPU, NCCL on GPU), and the
per-process device helpers: mixed precision on GPU only, peak memory for the run log."""

from __future__ import annotations

import datetime
import resource
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

DIST_TIMEOUT = datetime.timedelta(hours=2)  # rank 0 may extract features meanwhile


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed(world: int = 1, local_rank: int = 0) -> Dist:
    """This process's place in a run of `world` processes (torchrun's WORLD_SIZE and
    LOCAL_RANK, which the command reads); the process group reads torchrun's other
    variables itself (init_method "env://")."""
    local = local_rank
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=DIST_TIMEOUT)
    rank = dist.get_rank() if world > 1 else 0
    return Dist(rank=rank, world=world, device=device)


def peak_memory(d: Dist) -> dict[str, float | None]:
    """Peak RSS of this process (it only grows) and, on GPU, peak allocated CUDA memory."""
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    cuda_mb = None
    if torch.cuda.is_available():
        cuda_mb = torch.cuda.max_memory_allocated(d.device) / 2**20
    return {"peak_rss_mb": round(rss_mb, 1), "cuda_max_memory_mb": cuda_mb}


def autocast(d: Dist):
    """bf16 (or fp16) autocast on CUDA; nothing on CPU, where fp32 is exact and fast enough."""
    if d.device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
