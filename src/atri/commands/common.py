"""What the `atri` subcommands share: `BadInput` (a user error, exit code 2), the body of
every `main(argv) -> int` (parse, apply ATRI_THREADS, run, turn the expected errors into
"PROG: error: ..." and an exit code), and opening the checkpoint that a `--checkpoint`
flag names. The commands are the process's entry: they read the environment, the
libraries below them are passed what it says."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atri.training.data.features import default_cache_dir
from atri.training.data.manifest import Manifest, read_manifest, require_captions
from atri.training.evaluation.embed import check_langs

if TYPE_CHECKING:
    from atri.training.encoders.model import RetrievalModel

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class BadInput(ValueError):
    """A problem with what the user passed (exit code 2); the message names it."""


def run_command(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
    errors: Mapping[type[Exception], int],
    *,
    name: Callable[[argparse.Namespace], str] | None = None,
    log_level: int | None = logging.INFO,
    log_format: str = LOG_FORMAT,
    threads: bool = True,
) -> int:
    """A subcommand's `main`: log to stderr, parse `argv` (argparse's own exit code on bad
    arguments or --help), apply ATRI_THREADS (`threads`; `atri serve` reads it with its
    other settings), return `run(args)`. An exception of a type in `errors` (and BadInput,
    code 2 unless `errors` says otherwise) is printed as "PROG: error: MESSAGE" and its
    code returned; any other one propagates. `name(args)` is PROG (default: the parser's
    prog)."""
    if log_level is not None:  # None: the command configures logging itself
        logging.basicConfig(level=log_level, format=log_format)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    errors = {BadInput: 2, **errors}
    try:
        if threads:
            apply_thread_settings()
        return int(run(args))
    except tuple(errors) as exc:
        prog = parser.prog if name is None else name(args)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return next(code for kind, code in errors.items() if isinstance(exc, kind))


def apply_thread_settings() -> int | None:
    """ATRI_THREADS (docs/service.md), set once for the process: torch's pool and the text
    encoder's (training/encoders/threads.py), and OMP_NUM_THREADS for the OpenMP runtimes
    that load later (faiss's). Unset: the runtimes' defaults. Returns the count in force."""
    from pydantic import ValidationError

    from atri.training.encoders.threads import ThreadSettings, configure_threads

    try:
        n = ThreadSettings().threads
    except ValidationError as exc:
        raise BadInput(f"bad setting ATRI_THREADS: {exc.errors()[0]['msg']}") from exc
    if n is not None:
        os.environ["OMP_NUM_THREADS"] = str(n)
        configure_threads(n)
    return n


def open_checkpoint(spec: str) -> tuple[RetrievalModel, dict[str, Any]]:
    """(model, info) of a checkpoint directory, file, or 'default' (load_checkpoint); a
    missing or refused checkpoint is BadInput."""
    if spec != "default" and not Path(spec).exists():
        raise BadInput(f"--checkpoint {spec}: checkpoint not found")
    from atri.training.encoders.checkpoint import (
        CheckpointError,
        UnsafeCheckpointError,
        load_checkpoint,
    )

    try:
        return load_checkpoint(spec)
    except (CheckpointError, UnsafeCheckpointError, FileNotFoundError) as exc:
        raise BadInput(f"--checkpoint {spec}: {exc}") from exc


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    """--cache-dir / --no-cache, shared by `atri embed` and `atri eval`: by default frozen
    features come from (and go to) the cache `atri train` filled, so evaluating a freshly
    trained checkpoint does not encode every caption again."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--cache-dir", type=Path, default=default_cache_dir(os.environ),
                       help="frozen-feature cache to read and extend (default %(default)s)")
    group.add_argument("--no-cache", dest="cache_dir", action="store_const", const=None,
                       help="compute every feature, read and write no cache")


def open_manifest(
    path: Path, langs: Sequence[str] | None, need_captions: bool
) -> tuple[Manifest, list[str]]:
    """Read and validate the manifest and the requested languages; ManifestError otherwise."""
    manifest = read_manifest(path)
    if need_captions:
        require_captions(manifest)
    return manifest, check_langs(manifest, langs)
