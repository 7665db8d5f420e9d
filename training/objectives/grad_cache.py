"""Gradient caching for a trainable text tower (Gao et al., 2021, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", GradCache).

A contrastive loss couples every caption of the batch, so a plain step keeps the tower's
activations of all of them until backward: KCL's B*K captions cost K times ML-CLAP's B.
GradCache splits the step in two:

1. embed every caption without a graph (no activations kept) and compute the loss on
   those embeddings, so that backward stops at them with d loss / d embedding cached;
2. re-embed the captions a chunk at a time with a graph and back-propagate each chunk's
   cached gradient through it, summing the parameter gradients.

Peak memory is then one chunk's activations; the gradients are the plain step's (the
same sums, in another order), for one extra forward of the tower. The second pass replays
each chunk's random-number state, so a tower with dropout draws the same masks in both
passes (they differ from a plain step's masks, which are drawn over other batches).
`cached_embeddings` wraps the two passes in one autograd function, so the trainer's single
`loss.backward()` (and DDP's gradient hooks) work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

Embed = Callable[[Any], Tensor]  # a chunk -> (n, E) embeddings


class _CachedEmbeddings(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, embed: Embed, chunks: Sequence[Any], *params: Tensor) -> Tensor:
        ctx.embed, ctx.chunks, ctx.params = embed, chunks, params
        ctx.rng, outs = [], []
        for chunk in chunks:  # autograd.Function runs this without grad
            ctx.rng.append(_rng_state())
            outs.append(embed(chunk))
        ctx.sizes = [len(out) for out in outs]
        return torch.cat(outs)  # (N, E)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        params = ctx.params
        total: list[Tensor | None] = [None] * len(params)
        parts = zip(ctx.chunks, grad.split(ctx.sizes), ctx.rng, strict=True)
        for chunk, chunk_grad, rng in parts:
            with torch.enable_grad(), _replayed_rng(rng):
                out = ctx.embed(chunk)  # (n, E), this chunk's graph only
                grads = torch.autograd.grad(out, params, chunk_grad, allow_unused=True)
            total = [g if t is None else (t if g is None else t + g)
                     for t, g in zip(total, grads, strict=True)]
            del out, grads  # free the chunk's graph before the next one
        return (None, None, *total)


def _rng_state() -> tuple[Tensor, list[Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return torch.get_rng_state(), cuda


@contextmanager
def _replayed_rng(state: tuple[Tensor, list[Tensor]]) -> Iterator[None]:
    """Run with the RNG state of the first pass; the global state is left as it was."""
    cpu, cuda = state
    with torch.random.fork_rng(devices=range(len(cuda))):
        torch.set_rng_state(cpu)
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
        yield


def cached_embeddings(embed: Embed, chunks: Sequence[Any], params: Sequence[nn.Parameter]
                      ) -> Tensor:
    """torch.cat([embed(c) for c in chunks]) whose backward is GradCache's: `params` (every
    trainable parameter `embed` uses) get the plain gradients, one chunk's graph at a time."""
    params = [p for p in params if p.requires_grad]
    if not params or not torch.is_grad_enabled():
        return torch.cat([embed(chunk) for chunk in chunks])
    return _CachedEmbeddings.apply(embed, list(chunks), *params)


def text_chunks(groups: Sequence[tuple[str, list[str]]], size: int
                ) -> list[tuple[str, list[str]]]:
    """(lang, texts) groups cut into chunks of at most `size` captions, order kept."""
    if size < 1:
        raise ValueError(f"GradCache chunk size must be >= 1, got {size}")
    return [(lang, texts[a : a + size]) for lang, texts in groups
            for a in range(0, len(texts), size)]
