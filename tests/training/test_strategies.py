"""The strategy registry: each entry's plan has the batch layout its loss call reads, and
its loss call is the pure loss of losses.py on that layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atri.training.objectives import losses
from atri.training.objectives.sampling import CaptionTable
from atri.training.objectives.strategies import NAMES, draw_epoch, get_strategy

LANGS = ("eng", "fra", "deu")


class Batch:
    def __init__(self, present: torch.Tensor, clip_ids: torch.Tensor,
                 text_ids: torch.Tensor | None = None, multi_positive: bool = False) -> None:
        self.present, self.clip_ids, self.text_ids = present, clip_ids, text_ids
        self.multi_positive = multi_positive


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_registry_names_the_cli_strategies() -> None:
    assert NAMES == ("mlclap", "mlclap-mixture", "cacl", "kcl", "kcl-balanced")
    with pytest.raises(ValueError, match="unknown strategy 'clip'.*kcl-balanced"):
        get_strategy("clip")


@pytest.mark.parametrize("name", NAMES)
def test_plan_width_is_the_strategys_layout(name: str) -> None:
    table = CaptionTable(LANGS, np.full(10, 2), np.ones((10, len(LANGS)), dtype=bool))
    plan = draw_epoch(name, table, seed=0, epoch=0)
    assert plan.lang.shape[1] == get_strategy(name).slots(len(LANGS))


# name -> the pure loss on the layout, called by hand: audio (B, E), text (B, L, E)
EXPECTED = {
    "mlclap": lambda a, t, tau, b: losses.mlclap_loss(a, t[:, 0], tau),
    "mlclap-mixture": lambda a, t, tau, b: losses.mlclap_mixture_loss(a, t[:, 0], tau,
                                                                      b.clip_ids),
    "cacl": lambda a, t, tau, b: losses.cacl_loss(a, t[:, 0], t[:, 1], tau),
    "kcl": lambda a, t, tau, b: losses.kcl_loss(a, t, tau, b.present, b.text_ids,
                                                b.multi_positive),
    "kcl-balanced": lambda a, t, tau, b: losses.kcl_balanced_loss(a, t, tau, b.present,
                                                                  b.text_ids, b.multi_positive),
}


@pytest.mark.parametrize("name", NAMES)
def test_loss_call_is_the_pure_loss(name: str) -> None:
    strategy = get_strategy(name)
    slots = strategy.slots(len(LANGS))
    audio, text = unit(6, 8, seed=0), unit(6, slots, 8, seed=1)  # (B, E), (B, L, E)
    present = torch.ones(6, slots, dtype=torch.bool)
    if slots == len(LANGS):
        present[2, -1] = False  # KCL's losses mask an absent slot
    batch = Batch(present, torch.tensor([0, 1, 2, 0, 3, 1]))
    tau = torch.tensor(0.07)
    got = strategy.loss(audio, text, tau, batch)
    assert torch.isfinite(got)
    assert got == EXPECTED[name](audio, text, tau, batch)
    others = {n: EXPECTED[n](audio, text, tau, batch) for n in NAMES
              if n != name and get_strategy(n).slots(len(LANGS)) == slots}
    assert all(got != v for v in others.values())  # each entry calls its own loss


@pytest.mark.parametrize("name", [n for n in NAMES if get_strategy(n).masks_duplicates])
def test_duplicate_caption_ids_reach_the_loss(name: str) -> None:
    strategy = get_strategy(name)
    audio, text = unit(4, 8, seed=0), unit(4, len(LANGS), 8, seed=1)
    present = torch.ones(4, len(LANGS), dtype=torch.bool)
    ids = torch.arange(4 * len(LANGS)).reshape(4, len(LANGS))
    ids[1, 0] = ids[0, 0]  # clips 0 and 1 share a caption
    tau = torch.tensor(0.07)
    masked = strategy.loss(audio, text, tau, Batch(present, torch.arange(4), ids))
    plain = strategy.loss(audio, text, tau, Batch(present, torch.arange(4)))
    assert masked == EXPECTED[name](audio, text, tau, Batch(present, torch.arange(4), ids))
    assert masked < plain
    both = Batch(present, torch.arange(4), ids, multi_positive=True)
    positive = strategy.loss(audio, text, tau, both)
    assert positive == EXPECTED[name](audio, text, tau, both)
    assert positive > masked  # the shared caption stays in the denominators


def test_cacl_needs_english_and_another_language() -> None:
    cacl = get_strategy("cacl")
    assert cacl.langs_problem(("eng", "fra")) is None
    assert "English" in cacl.langs_problem(("fra", "deu"))
    assert "English" in cacl.langs_problem(("eng",))
    assert all(get_strategy(n).langs_problem(("fra",)) is None for n in NAMES if n != "cacl")


def test_cacl_names_the_clips_it_leaves_out() -> None:
    has = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1]], dtype=bool)
    table = CaptionTable(LANGS, np.full(4, 1), has)
    assert get_strategy("cacl").left_out(table) == (
        "cacl: 2 clip(s) lack English or any other language and are left out")
    assert all(get_strategy(n).left_out(table) is None for n in NAMES if n != "cacl")
