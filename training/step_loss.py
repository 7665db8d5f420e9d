"""One training step's loss, whatever the number of processes: each rank embeds its
slice of the global batch, a differentiable all_gather joins the embeddings, and every
rank computes the loss of the whole global batch, so that the contrastive batch does not
depend on the number of processes. (The all_gather backward sums the W identical copies
of the gradient and DDP averages over W ranks: the update equals that of one process
with the global batch.) With `grad_cache` > 0 a trainable text tower embeds the captions
through GradCache (grad_cache.py) in chunks of that many captions."""

from __future__ import annotations

import warnings

import torch
import torch.distributed.nn.functional as dist_nn
from torch import Tensor, nn

from atri.training.batches import LocalBatch
from atri.training.encoders.model import RetrievalModel
from atri.training.objectives.grad_cache import cached_embeddings, text_chunks
from atri.training.objectives.prototypes import Prototypes
from atri.training.objectives.strategies import Strategy


class StepLoss(nn.Module):
    """One step's loss: local batch -> embeddings -> global batch (all_gather) -> loss.
    A module so that DDP can wrap it and synchronise the gradients of its parameters."""

    def __init__(self, model: RetrievalModel, strategy: Strategy, world: int,
                 grad_cache: int = 0, prototypes: Prototypes | None = None) -> None:
        super().__init__()
        self.model, self.strategy, self.world = model, strategy, world
        self.grad_cache = grad_cache  # captions per GradCache chunk; 0: a plain step
        self.prototypes = prototypes  # TrainConfig.prototype_weight > 0: its loss is added

    def _gather(self, x: Tensor) -> Tensor:
        """(b, ...) per rank -> (B, ...) in rank order, gradients flowing back to each rank."""
        if self.world == 1:
            return x
        with warnings.catch_warnings():
            # deprecated for _functional_collectives, whose backward needs reduce_scatter,
            # which gloo lacks; this one's backward works on every backend
            warnings.simplefilter("ignore", FutureWarning)
            return torch.cat(dist_nn.all_gather(x), dim=0)

    def forward(self, batch: LocalBatch) -> Tensor:
        model = self.model
        audio_feats = (
            batch.audio if isinstance(batch.audio, Tensor) else model.audio_features(batch.audio)
        )
        # text before the audio head: dropout in both draws random numbers in this order
        text_emb = self._text(batch.text)  # (P, E)
        audio = model.project_audio(audio_feats).float()  # (b, E)
        text = audio.new_zeros(*batch.present_local.shape, audio.shape[1])  # (b, L, E)
        text = text.index_put((batch.slots[:, 0], batch.slots[:, 1]), text_emb)
        with torch.autocast(audio.device.type, enabled=False):  # the loss in fp32
            loss = self.strategy.loss(self._gather(audio), self._gather(text),
                                      model.tau().float(), batch)
            if self.prototypes is not None and batch.text_groups is not None:
                # this rank's captions only; DDP averages the ranks' gradients
                loss = loss + self.prototypes.loss(model, text_emb.float(), batch.text_groups)
            return loss

    def _text(self, text: Tensor | list[tuple[str, list[str]]]) -> Tensor:
        """(P, E) embeddings of cached features or of (lang, texts) groups."""
        model = self.model
        if isinstance(text, Tensor):
            return model.project_text(text).float()  # (P, E)
        if not self.grad_cache:
            feats = torch.cat([model.text_features(t, lang) for lang, t in text])  # (P, D)
            return model.project_text(feats).float()

        def embed(chunk: tuple[str, list[str]]) -> Tensor:
            return model.project_text(model.text_features(chunk[1], chunk[0])).float()

        params = [*model.text_head.parameters()]
        if model.text_tower is not None:
            params += model.text_tower.parameters()
        return cached_embeddings(embed, text_chunks(text, self.grad_cache), params)
