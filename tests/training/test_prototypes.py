"""The concept-prototype loss (objectives/prototypes.py) against loops (a real run:
tests/training/test_train.py, test_prototypes_pull_captions_toward_their_group)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atri.training.objectives.prototypes import Prototypes, group_prototypes, prototype_loss


def _unit(*shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-1)


def test_prototypes_are_the_normalised_group_means() -> None:
    audio = _unit(6, 4, seed=1)
    groups = torch.tensor([0, 2, 0, -1, 2, 1])
    protos = group_prototypes(audio, groups, 3)
    for g, members in ((0, [0, 2]), (1, [5]), (2, [1, 4])):
        mean = sum(audio[i] for i in members) / len(members)
        assert torch.allclose(protos[g], mean / mean.norm(), atol=1e-12)


def test_prototype_loss_matches_loop() -> None:
    text, protos = _unit(5, 4, seed=2), _unit(3, 4, seed=3)
    targets = torch.tensor([1, -1, 0, 2, 1])
    tau = 0.07
    got = prototype_loss(text, targets, protos, torch.tensor(tau, dtype=torch.float64))
    terms = []
    for t, g in zip(text, targets.tolist(), strict=True):
        if g < 0:
            continue
        scores = [float(t @ p) / tau for p in protos]
        terms.append(math.log(sum(math.exp(s) for s in scores)) - scores[g])
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)


def test_no_grouped_caption_adds_nothing_but_keeps_the_graph() -> None:
    text = _unit(3, 4, seed=4).requires_grad_(True)
    loss = prototype_loss(text, torch.tensor([-1, -1, -1]), _unit(2, 4, seed=5),
                          torch.tensor(0.1, dtype=torch.float64))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(text.grad, torch.zeros_like(text))


def test_prototypes_refuse_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="5 feature rows for 4 clip groups"):
        Prototypes(torch.zeros(5, 3), torch.zeros(4, dtype=torch.int64), 1.0)


def test_prototypes_use_the_audio_head_without_dropout() -> None:
    """A head with dropout in train mode: the prototypes are those of eval mode (the
    embeddings search sees), the same on every call, and the head's mode is restored."""
    from atri.training.encoders.model import ModelConfig, build_model

    model = build_model(ModelConfig(audio_dropout=0.5)).train()
    features = torch.randn(12, model.audio_dim)
    with torch.no_grad():  # in train mode the head's dropout draws anew on every call
        assert not torch.allclose(model.project_audio(features), model.project_audio(features))
    groups = torch.tensor([0, 1, 2] * 4)
    protos = Prototypes(features, groups, 1.0)
    first, second = protos.prototypes(model), protos.prototypes(model)
    assert model.audio_head.training
    model.eval()
    expected = group_prototypes(model.project_audio(features).detach(), groups, 3)
    assert torch.allclose(first, expected, atol=1e-6) and torch.equal(first, second)
