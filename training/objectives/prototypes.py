"""Concept prototypes for the text side (our option, `--prototype-weight W --prototype-key K`).

Session 14 measured that a caption lands far from the recordings of its concept as a
whole: on the real `test` split a concept's mean training-audio embedding (its prototype)
finds a recording of the concept first for 49% of test recordings, the captions of the
same model for 26% (docs/results/sfx-ablation.md, "Session 14"). In-batch contrastive
learning aligns a caption with its own recording against 23 others; it never asks the
caption to point at what all recordings of its concept share.

The prototype loss asks exactly that: each caption of a grouped clip (manifest `meta`
values under the key, as `--mask-same` groups) is classified among every group's
prototype, the L2-normalised mean of the group's training audio embeddings, by cross-
entropy at the model's temperature:

    L_proto = -(1/P) sum_t log softmax_g( s(t, p_g) / tau )[g(t)]

over the P captions of grouped clips in the batch, tau taken as a constant (it learns
from the contrastive loss only). The prototypes are computed from every training clip's
cached features under the current audio head, without gradient (the text side learns to
point at them; the contrastive loss still moves the audio side), so the option needs a
frozen audio tower. The step's loss is the strategy's loss plus W * L_proto.

Measured (same place): the captions do land nearer their prototypes, but the real `test`
split's recall does not rise (W = 1: -0.8 R@10 over 5 seeds; -1.7 on the joint data);
kept as an option for studies, off by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def group_prototypes(audio: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """(G, E) L2-normalised mean of the unit embeddings `audio` (N, E) of each group;
    `groups` (N,) int64 in [0, G) or -1 (in no group). Every group must hold a clip."""
    keep = groups >= 0
    sums = audio.new_zeros(n_groups, audio.shape[1]).index_add_(0, groups[keep], audio[keep])
    return F.normalize(sums, dim=-1)


def prototype_loss(text: Tensor, targets: Tensor, prototypes: Tensor, tau: Tensor) -> Tensor:
    """Mean cross-entropy of captions `text` (P, E) among `prototypes` (G, E) at `tau`,
    over the rows whose target (P,) is a group (>= 0); 0 (with a graph) when none is."""
    keep = targets >= 0
    if not bool(keep.any()):
        return text.sum() * 0.0
    logits = text[keep] @ prototypes.T / tau  # (P', G)
    return F.cross_entropy(logits, targets[keep])


class Prototypes:
    """The training clips' cached audio features and groups: `loss` embeds them all with
    the model's current audio head (no gradient), averages per group and scores a batch's
    captions against the result."""

    def __init__(self, features: Tensor, groups: Tensor, weight: float) -> None:
        if features.shape[0] != groups.shape[0]:
            raise ValueError(f"prototypes: {features.shape[0]} feature rows for "
                             f"{groups.shape[0]} clip groups")
        self.features, self.groups, self.weight = features, groups, weight
        self.n_groups = int(groups.max()) + 1 if len(groups) else 0

    @torch.no_grad()
    def prototypes(self, model) -> Tensor:
        """(G, E) of the current audio head in eval mode (no dropout: a prototype is the
        clips' embedding as search sees it); the head's mode is restored."""
        head = model.audio_head
        training = head.training
        head.eval()
        try:
            audio = torch.cat([model.project_audio(x) for x in self.features.split(4096)])
        finally:
            head.train(training)
        return group_prototypes(audio.float(), self.groups.to(audio.device), self.n_groups)

    def loss(self, model, text: Tensor, targets: Tensor) -> Tensor:
        """W * L_proto of the captions `text` (P, E) whose clips' groups are `targets` (P,)."""
        protos = self.prototypes(model).to(text.device)
        # the temperature learns from the contrastive loss alone: prototypes of one audio
        # space sit close together, and this term would keep sharpening it
        return self.weight * prototype_loss(text, targets.to(text.device), protos,
                                            model.tau().detach().float())
