"""`atri demo`: the whole job on the embedded default model, in one command. Builds the
`small` demo corpus if absent, indexes one of its splits with the default checkpoint if
no index exists, and serves it on http://127.0.0.1:8000 (shared spec cli.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from atri.commands.common import BadInput, run_command
from atri.commands.serve import serve
from atri.index.errors import IndexStoreError
from atri.service.settings import Settings

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atri demo", description="build the small corpus and its index, then serve them"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data"),
        help="folder for corpus-small/ and index-small/ (default: ./data)",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="which split of the corpus to index (default: test)",
    )
    parser.add_argument("--checkpoint", default="default", help="checkpoint to index with")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="corpus rendering processes")
    return parser


def outdated(index: Path, checkpoint: str) -> str | None:
    """Why the demo index no longer matches `checkpoint` (an update shipped a retrained
    default checkpoint, and `atri serve` refuses an index built with other weights), else
    None. An index or checkpoint this cannot read is left to `atri serve` to report."""
    from atri.index import layout
    from atri.index.errors import IndexStoreError
    from atri.index.version import read_meta
    from atri.training.encoders.checkpoint import (
        CheckpointError,
        default_checkpoint_dir,
        read_checkpoint_meta,
    )

    try:
        built = read_meta(layout.version_dir(index, layout.require_current(index)))
        folder = default_checkpoint_dir() if checkpoint == "default" else Path(checkpoint)
        current = read_checkpoint_meta(folder).get("weights_sha256")
    except (IndexStoreError, CheckpointError, OSError):
        return None
    recorded = ((built.get("checkpoint") or {}).get("info") or {}).get("weights_sha256")
    if recorded and current and recorded != current:
        return f"it was built with other weights of checkpoint {checkpoint}"
    return None


def prepare(data: Path, split: str, checkpoint: str, workers: int) -> Path:
    """The corpus and the index, each built only when absent (the index also when its
    checkpoint's weights changed); returns the index dir."""
    from atri.commands.index import index_records, manifest_source
    from atri.training.corpus.build import build

    corpus = data / "corpus-small"
    index = data / "index-small"
    if not (corpus / "corpus.json").is_file():
        log.info("building the small demo corpus in %s (a few minutes, once)", corpus)
    build(corpus, size="small", seed=0, workers=workers)  # returns at once when complete
    reason = "absent" if not (index / "CURRENT").is_file() else outdated(index, checkpoint)
    if reason:
        log.info("indexing %s with checkpoint %s into %s (%s)", split, checkpoint, index, reason)
        records, source = manifest_source(corpus / f"{split}.jsonl")
        index_records(checkpoint, records, source, index)
    return index


def run(args: argparse.Namespace) -> int:
    index = prepare(args.data, args.split, args.checkpoint, args.workers)
    settings = Settings(index_dir=index, checkpoint=args.checkpoint, host=args.host, port=args.port)
    print(f"atri demo: serving {index} on http://{args.host}:{args.port}/", file=sys.stderr)
    return serve(settings)


def main(argv: list[str] | None = None) -> int:
    errors = {BadInput: 1, IndexStoreError: 1, ValidationError: 1, OSError: 1}
    return run_command(build_parser(), run, argv, errors)
