"""Consistency across query languages that is not a by-product of accuracy.

MRV (metrics.py) is the spread of a query's ranks over the K languages; it shrinks
mechanically as recall improves (ranks near 1 cannot spread much). Two measures beside
it separate "answers the same whatever the language" from "answers well":

- top-1 agreement: the fraction of query slots whose first result is the same item in
  all K languages, right or wrong;
- log-rank variance: the population variance over the K languages of ln(rank), per
  slot, averaged; a rank ratio counts the same at rank 2 vs 4 as at 200 vs 400.
"""

from __future__ import annotations

import numpy as np


def t2a_top1(audio: np.ndarray, text: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The clip each caption retrieves first. audio (N, D), text (N, C, D), present
    (N, C) bool -> (N, C) int64, -1 where absent. Ties go to the lower clip index."""
    n, c, dim = text.shape
    scores = text.reshape(n * c, dim) @ audio.T  # (N*C, N)
    top = np.argmax(scores, axis=1).reshape(n, c)  # (N, C)
    return np.where(present, top, -1)


def a2t_top1(audio: np.ndarray, text: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The clip whose caption each clip retrieves first, among the present captions.
    audio (N, D), text (N, C, D), present (N, C) bool -> (N,) int64, -1 if no caption
    is present. Ties go to the lower (clip, caption) index."""
    n, c, dim = text.shape
    scores = audio @ text.reshape(n * c, dim).T  # (N, N*C)
    scores = np.where(present.reshape(1, n * c), scores, -np.inf)
    if not present.any():
        return np.full(n, -1, dtype=np.int64)
    return np.argmax(scores, axis=1) // c


def top1_agreement(top1: np.ndarray) -> np.ndarray:
    """(L, M) first results of M query slots in L languages -> (M,) float, 1 where all
    L languages retrieve the same item first, 0 where not, NaN where a language lacks
    the slot (-1)."""
    top1 = np.asarray(top1)
    same = (top1 == top1[:1]).all(axis=0).astype(np.float64)  # (M,)
    return np.where((top1 >= 0).all(axis=0), same, np.nan)


def log_rank_variance(ranks: np.ndarray) -> np.ndarray:
    """(L, M) 1-based ranks of M query slots in L languages -> (M,) population variance
    over L of ln(rank), NaN where a language lacks the slot (NaN rank)."""
    logs = np.log(np.asarray(ranks, np.float64))  # (L, M)
    return logs.var(axis=0)  # NaN propagates from an absent slot
