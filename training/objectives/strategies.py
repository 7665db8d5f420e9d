"""The training strategies (`atri train --strategy`, shared spec metrics.md) as objects.

A `Strategy` owns the three things in which strategies differ, so that the loop, the
batches and the step never ask which one they run:

    plan      which captions each epoch trains on (sampling.py draws it)
    layout    how many text slots an item of a batch holds: 1, 2 (cacl's English and
              other language) or K (KCL's caption in every training language)
    loss      the call of its pure loss function (losses.py) on that layout

Adding a strategy is one entry of `STRATEGIES` plus its tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from torch import Tensor

from atri.training.languages import ENGLISH
from atri.training.objectives import losses, sampling
from atri.training.objectives.sampling import MIXTURE_PROB, CaptionTable, EpochPlan


class StepBatch(Protocol):
    """What a loss call reads of a global batch besides the embeddings (batches.LocalBatch)."""

    present: Tensor  # (B, L) bool
    clip_ids: Tensor  # (B,) int64
    text_ids: Tensor | None  # (B, L) int64, equal for equal caption strings; None: not asked
    multi_positive: bool  # pairs of equal text_ids are positives, not left out


class Strategy(ABC):
    """The default hooks; each strategy defines `draw` and `loss`, and `slots` if its
    items carry more than one caption."""

    name: str

    @abstractmethod
    def draw(self, table: CaptionTable, rng: np.random.Generator,
             mixture_prob: float) -> EpochPlan:
        """The epoch's plan: which clip and which caption language(s) each item holds."""

    def slots(self, n_langs: int) -> int:
        """Text slots per item of a batch (the L of EpochPlan.lang (M, L))."""
        return 1

    @abstractmethod
    def loss(self, audio: Tensor, text: Tensor, tau: Tensor, batch: StepBatch) -> Tensor:
        """audio (B, E), text (B, L, E) as laid out by `slots`, tau scalar."""

    def langs_problem(self, langs: Sequence[str]) -> str | None:
        """Why these training languages cannot serve this strategy, or None."""
        return None

    def left_out(self, table: CaptionTable) -> str | None:
        """A warning naming the clips an epoch never trains on, or None."""
        return None

    masks_duplicates = False  # its loss can leave duplicate captions out of the negatives


class MLCLAP(Strategy):
    name = "mlclap"

    def draw(self, table, rng, mixture_prob):
        return sampling.draw_mlclap(table, rng)

    def loss(self, audio, text, tau, batch):
        return losses.mlclap_loss(audio, text[:, 0], tau)


class MLCLAPMixture(Strategy):
    name = "mlclap-mixture"

    def draw(self, table, rng, mixture_prob):
        return sampling.draw_mixture(table, rng, mixture_prob)

    def loss(self, audio, text, tau, batch):
        return losses.mlclap_mixture_loss(audio, text[:, 0], tau, batch.clip_ids)


class CACL(Strategy):
    name = "cacl"

    def draw(self, table, rng, mixture_prob):
        return sampling.draw_cacl(table, rng)

    def slots(self, n_langs):
        return 2

    def loss(self, audio, text, tau, batch):
        return losses.cacl_loss(audio, text[:, 0], text[:, 1], tau)

    def langs_problem(self, langs):
        if ENGLISH not in langs or len(langs) < 2:
            return "cacl needs English and at least one other language in langs"
        return None

    def left_out(self, table):
        n = int((~sampling.cacl_eligible(table)).sum())
        return f"cacl: {n} clip(s) lack English or any other language and are left out" if n \
            else None


class OneToK(Strategy):
    """KCL and its balanced variant: the same 1-to-K batches, another loss."""

    masks_duplicates = True

    def __init__(self, name: str, pure_loss: Callable[..., Tensor]) -> None:
        self.name, self.pure_loss = name, pure_loss

    def draw(self, table, rng, mixture_prob):
        return sampling.draw_kcl(table, rng)

    def slots(self, n_langs):
        return n_langs

    def loss(self, audio, text, tau, batch):
        return self.pure_loss(audio, text, tau, batch.present, batch.text_ids,
                              batch.multi_positive)


STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (
        MLCLAP(), MLCLAPMixture(), CACL(),
        OneToK("kcl", losses.kcl_loss), OneToK("kcl-balanced", losses.kcl_balanced_loss),
    )
}
NAMES: tuple[str, ...] = tuple(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; expected one of {list(NAMES)}") from None


def draw_epoch(
    strategy: str | Strategy,
    table: CaptionTable,
    seed: int,
    epoch: int,
    mixture_prob: float = MIXTURE_PROB,
) -> EpochPlan:
    """The seeded plan of `epoch` (0-based) for `strategy` (sampling.py's docstring)."""
    if isinstance(strategy, str):
        strategy = get_strategy(strategy)
    return strategy.draw(table, sampling.epoch_rng(seed, epoch), mixture_prob)
