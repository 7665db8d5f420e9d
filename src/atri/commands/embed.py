"""`atri embed` (shared spec cli.md); the .npz layout: training/evaluation/embed.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from atri.commands.common import (
    BadInput,
    add_cache_options,
    open_checkpoint,
    open_manifest,
    run_command,
)
from atri.training.data.audio_io import AudioDecodeError
from atri.training.data.features import AUDIO_BATCH
from atri.training.data.manifest import ManifestError
from atri.training.evaluation.embed import embed_manifest, npz_arrays
from atri.training.fileio import atomic_write, file_sha256


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atri embed",
        description="export a checkpoint's audio and caption embeddings of a manifest to .npz")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory or 'default'")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output .npz file")
    parser.add_argument("--what", choices=("audio", "text", "both"), default="both")
    parser.add_argument("--langs", nargs="+", help="caption languages (default: all present)")
    parser.add_argument("--batch-size", type=int, default=AUDIO_BATCH, help="clips per batch")
    add_cache_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.out.suffix != ".npz":
        raise BadInput(f"--out {args.out}: expected a .npz file")
    if args.batch_size < 1:
        raise BadInput("--batch-size must be at least 1")
    manifest, langs = open_manifest(args.manifest, args.langs, need_captions=False)
    model, _ = open_checkpoint(args.checkpoint)
    emb = embed_manifest(
        model, manifest, langs, audio=args.what != "text", text=args.what != "audio",
        audio_batch=args.batch_size, cache_dir=args.cache_dir,
    )
    meta = {
        "checkpoint": str(args.checkpoint),
        "identity": model.identity(),
        "manifest": str(args.manifest),
        "manifest_sha256": file_sha256(args.manifest),
    }
    atomic_write(args.out, lambda f: np.savez(f, **npz_arrays(manifest, emb, meta)))
    print(f"wrote {args.out}: {len(manifest)} clips, languages {langs}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv, {ManifestError: 2, AudioDecodeError: 2})
