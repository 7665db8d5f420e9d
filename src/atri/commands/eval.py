"""`atri eval` (shared spec cli.md, metrics.md): evaluate a checkpoint on a manifest.

Writes into REPORT_DIR, each file atomically (temp file + rename):

    metrics.json   every metric of metrics.md, shaped as cli.md says, with provenance
    report.md      ATRI Tables 1, 2, 3 and 5 (training/evaluation/report.py), linking the plot
    tsne.png       ATRI Appendix A: t-SNE of 50 clips, their audio and parallel captions
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from atri.commands.common import (
    BadInput,
    add_cache_options,
    open_checkpoint,
    open_manifest,
    run_command,
)
from atri.training.data.audio_io import AudioDecodeError
from atri.training.data.features import AUDIO_BATCH
from atri.training.data.manifest import Manifest, ManifestError
from atri.training.evaluation.embed import embed_manifest
from atri.training.evaluation.evaluate import TSNE_CLIPS, evaluate, provenance, write_tsne
from atri.training.evaluation.report import rank_cases, render_report, select_cases
from atri.training.fileio import atomic_write_text


def parse_cases(specs: Sequence[str], manifest: Manifest) -> list[tuple[str, int, int]]:
    """`ID` or `ID:J` (caption index J, default 0) -> (label, clip index, J)."""
    index = {r.id: i for i, r in enumerate(manifest)}
    out = []
    for spec in specs:
        clip_id, sep, j = spec.rpartition(":") if ":" in spec else (spec, "", "0")
        if clip_id not in index:
            raise BadInput(f"--cases {spec}: no clip {clip_id!r} in {manifest.path}")
        if not j.isdigit() or int(j) >= manifest.records[index[clip_id]].n_captions():
            raise BadInput(f"--cases {spec}: clip {clip_id!r} has no caption index {j}")
        out.append(("chosen", index[clip_id], int(j)))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atri eval", description="evaluate a checkpoint on a manifest (shared spec cli.md)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory or 'default'")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="report directory")
    parser.add_argument("--langs", nargs="+", help="languages (default: all in the manifest)")
    parser.add_argument("--batch-size", type=int, default=AUDIO_BATCH, help="clips per batch")
    add_cache_options(parser)
    parser.add_argument("--cases", nargs="+", default=[], metavar="ID[:J]",
                        help="query slots for the rank table (default: least and most "
                             "consistent); fix them to compare checkpoints on the same cases")
    parser.add_argument("--tsne-clips", type=int, default=TSNE_CLIPS,
                        help="clips in the t-SNE plot, 0 for no plot")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE sample and layout")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.tsne_clips < 0:
        raise BadInput("--batch-size must be >= 1 and --tsne-clips >= 0")
    if args.out.exists() and not args.out.is_dir():
        raise BadInput(f"--out {args.out}: exists and is not a directory")
    manifest, langs = open_manifest(args.manifest, args.langs, need_captions=True)
    chosen = parse_cases(args.cases, manifest)
    model, info = open_checkpoint(args.checkpoint)
    emb = embed_manifest(
        model, manifest, langs, audio_batch=args.batch_size, cache_dir=args.cache_dir
    )
    metrics, ranks = evaluate(emb, langs)
    out = {
        "checkpoint": str(args.checkpoint),
        "manifest": str(args.manifest),
        **{k: metrics.pop(k) for k in ("n_clips", "languages")},
        "provenance": provenance(args.manifest, model, info),
        **metrics,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "metrics.json", json.dumps(out, indent=2, allow_nan=False) + "\n")
    plot = write_tsne(args.out, emb, langs, args.tsne_clips, args.seed) if args.tsne_clips else None
    ids = [r.id for r in manifest]
    cases = rank_cases(ranks, ids, emb.captions, chosen or select_cases(ranks))
    atomic_write_text(args.out / "report.md", render_report(out, cases, plot))
    print(f"wrote {args.out}: " + "; ".join(
        f"{name} {value:.2f}" if value is not None else f"{name} undefined"
        for name, value in (
            ("T2A R@1 avg", out["t2a"]["avg"]["R@1"]),
            ("A2T R@1 avg", out["a2t"]["avg"]["R@1"]),
            ("T2A MRV (variance)", out["mrv_var"]["t2a"]),
        )
    ))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv, {ManifestError: 2, AudioDecodeError: 2})
