"""The real clips a benchmark reads when it is given no --manifest: the `tiny` demo
corpus, built once in --corpus and kept (a later build of the same corpus is a no-op)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_corpus_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--corpus",
        type=Path,
        default=Path("data/corpus-tiny"),
        help="where the tiny corpus is built when no --manifest is given",
    )


def tiny_corpus(folder: Path, workers: int) -> Path:
    """`folder`, holding the tiny demo corpus (built there unless it already is)."""
    from atri.training.corpus.build import build  # only a run without --manifest needs it

    build(folder, size="tiny", seed=0, workers=workers)
    return folder
