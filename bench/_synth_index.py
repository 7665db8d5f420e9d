"""Helpers of bench/search.py: the model (the installed default checkpoint, else a seeded
random-head one), a real corpus embedded once with it, and index directories of any size
synthesised around it, written by the project's own index code.

Clip i of a synthetic index is real clip `i % R` (R real clips): its real embedding plus
isotropic gaussian noise, re-normalised (or, with `mix`, a random blend of 3 real clips
plus that noise), with the id `syn-<i>` and a record that points at its source clip's
audio and carries its first caption per language. The caption indices hold the real
captions (each mapped to the first synthetic clip of each of its real clips). The
version is written by `atri.index.version.write_version` (index kind chosen by size,
efSearch / nprobe tuned with the caption vectors as queries, as `atri index build`
does) and published like `atri.index.build.build_index` publishes it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atri.index import layout, live
from atri.index.version import CHUNK, CaptionSource, write_version
from atri.training.data.features import AUDIO_BATCH
from atri.training.data.manifest import ClipRecord, read_manifest


@dataclass
class RealCorpus:
    """Real clips and their distinct captions, embedded by one model.

    `captions[lang]` lists distinct texts; `caption_vecs[lang]` their (C, E) vectors;
    `caption_clips[lang][j]` the real clip positions carrying text j; `held_out[lang]`
    the texts only clips of test splits carry: they stay out of the caption indices, so
    the clip index's tuning never sees them as queries."""

    records: list[ClipRecord]  # audio paths absolute
    audio: np.ndarray  # (R, E) float32
    captions: dict[str, list[str]]
    caption_vecs: dict[str, np.ndarray]
    caption_clips: dict[str, list[list[int]]]
    held_out: dict[str, set[str]]

    def nn_distance(self) -> float:
        """Median distance of a real clip to its nearest other real clip."""
        sims = self.audio @ self.audio.T  # (R, R)
        np.fill_diagonal(sims, -np.inf)
        return float(np.median(np.sqrt(np.maximum(0.0, 2 - 2 * sims.max(axis=1)))))


def open_model(work: Path, seed: int) -> tuple[Any, dict[str, Any], bool]:
    """(model, meta.json's checkpoint entry, random heads?): the installed default
    checkpoint, else a seeded random-head one of the default architecture."""
    from atri.training.encoders.checkpoint import (
        default_checkpoint_dir,
        load_checkpoint,
        save_checkpoint,
    )
    from atri.training.encoders.model import ModelConfig, build_model

    random_heads = not default_checkpoint_dir().is_dir()
    path = "default"
    if random_heads:
        torch.manual_seed(seed)
        path = str(work / "checkpoint")
        save_checkpoint(
            build_model(ModelConfig()),
            path,
            training_config={"note": "bench"},
            step=0,
            epoch=0,
            metrics={},
        )
    model, info = load_checkpoint(path)
    return model, {"path": path, "info": json.loads(json.dumps(info, default=str))}, random_heads


def read_clips(manifests: Sequence[Path], limit: int | None) -> tuple[list[ClipRecord], set[str]]:
    """Records (audio absolute) of the manifests, at most `limit` (taken evenly from each
    manifest's start), and the ids of those in test splits (file name test*)."""
    per_file = []
    for path in manifests:
        manifest = read_manifest(path)
        records = [
            ClipRecord(r.id, str(manifest.audio_path(r).resolve()), r.captions, r.meta)
            for r in manifest
        ]
        per_file.append((path.name.startswith("test"), records))
    if limit is not None:
        share = max(1, limit // len(per_file))
        per_file = [(test, records[:share]) for test, records in per_file]
    records = [r for _, rs in per_file for r in rs]
    return records, {r.id for test, rs in per_file if test for r in rs}


def embed_corpus(model: Any, manifests: Sequence[Path], limit: int | None = None) -> RealCorpus:
    """The clips and their distinct captions embedded by `model`. Raw backbone and text
    encoder features come through the feature caches `atri train` fills
    (training/data/features.py, text_cache.py): a corpus embedded once before costs seconds.
    A fine-tuned audio tower (the default trained aisfx's top blocks) is run on every clip."""
    from atri.training.data.features import default_cache_dir
    from atri.training.data.text_cache import encode_cached
    from atri.training.evaluation.embed import path_feature_batches

    cache = default_cache_dir(os.environ)
    records, test_ids = read_clips(manifests, limit)
    paths = [Path(r.audio) for r in records]
    with torch.inference_mode():
        feats = torch.cat(list(path_feature_batches(model, paths, AUDIO_BATCH, cache)))
        audio = model.project_audio(feats).float().numpy()  # (R, E)
    found: dict[str, dict[str, list[int]]] = {}
    for pos, record in enumerate(records):
        for lang, texts in record.captions.items():
            for text in dict.fromkeys(texts):
                found.setdefault(lang, {}).setdefault(text, []).append(pos)
    captions, vecs, clips, held_out = {}, {}, {}, {}
    for lang, table in found.items():
        captions[lang] = list(table)
        clips[lang] = list(table.values())
        held_out[lang] = (
            {t for t, pos in table.items() if all(records[p].id in test_ids for p in pos)}
            if len(test_ids) < len(records)
            else set()
        )
        with torch.inference_mode():
            raw = encode_cached(model.text_encoder, captions[lang], lang, cache / "text")
            vecs[lang] = model.project_text(raw).float().numpy()  # (C, E)
    return RealCorpus(records, audio, captions, vecs, clips, held_out)


def clip_id(i: int) -> str:
    return f"syn-{i:07d}"


MIX = 3  # real clips blended into one synthetic clip (--synth mix)


def synthetic_chunks(
    real: np.ndarray, n: int, sigma: float, seed: int, mix: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(sources (m,), vectors (m, E) float32) chunks of n synthetic clips, the same for
    the same arguments. Clip i is real clip i % R plus N(0, sigma^2 I) (near-copies:
    clusters of n / R points), or with `mix` a Dirichlet(1, 1, 1) blend of 3 random
    real clips plus that noise (a continuum); L2-normalised. Its source is the real clip
    it copies, or the blend's heaviest part."""
    dim = real.shape[1]
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(n, start + CHUNK))
        rng = np.random.default_rng([seed, start])
        if mix:
            parts = rng.integers(0, len(real), (len(rows), MIX))  # (m, 3)
            weights = rng.dirichlet(np.ones(MIX), len(rows)).astype(np.float32)  # (m, 3)
            base = np.einsum("mk,mke->me", weights, real[parts])  # (m, E)
            sources = parts[np.arange(len(rows)), weights.argmax(axis=1)]
        else:
            sources = rows % len(real)
            base = real[sources]
        v = base + sigma * rng.standard_normal((len(rows), dim), np.float32)
        yield sources, v / np.linalg.norm(v, axis=1, keepdims=True)


def synthetic_records(
    corpus: RealCorpus, chunks: Iterator[tuple[np.ndarray, np.ndarray]]
) -> Iterator[ClipRecord]:
    i = 0
    for sources, _ in chunks:
        for source in sources.tolist():
            src = corpus.records[source]
            captions = {lang: texts[:1] for lang, texts in src.captions.items() if texts}
            yield ClipRecord(clip_id(i), src.audio, captions, {"source_clip": src.id})
            i += 1


def first_copies(chunks: Iterator[tuple[np.ndarray, np.ndarray]], r: int) -> dict[int, str]:
    """real clip -> the id of the first synthetic clip made from it."""
    first: dict[int, str] = {}
    start = 0
    for sources, _ in chunks:
        for offset, source in enumerate(sources.tolist()):
            first.setdefault(source, clip_id(start + offset))
        start += len(sources)
        if len(first) == r:
            break
    return first


def write_index(
    root: Path,
    corpus: RealCorpus,
    n: int,
    *,
    sigma: float,
    seed: int,
    mix: bool,
    identity: dict[str, str],
    checkpoint: dict[str, Any],
    source: dict[str, Any],
    factory: str | None = None,
) -> dict[str, Any]:
    """Write and publish a synthetic index of `n` clips at `root` (`factory` None: the
    kind chosen by size); returns its meta.json."""
    if n < len(corpus.records):
        raise ValueError(f"{n} clips: fewer than the {len(corpus.records)} real ones")
    dim = corpus.audio.shape[1]

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return synthetic_chunks(corpus.audio, n, sigma, seed, mix)

    first = first_copies(chunks(), len(corpus.records))
    captions = {}
    for lang, texts in corpus.captions.items():
        keep = [j for j, t in enumerate(texts) if t not in corpus.held_out[lang]]
        captions[lang] = CaptionSource(
            [texts[j] for j in keep],
            [[first[p] for p in corpus.caption_clips[lang][j] if p in first] for j in keep],
            [corpus.caption_vecs[lang][keep]],
        )
    staged = layout.staging_dir(root)
    try:
        write_version(
            staged,
            dim=dim,
            ids=[clip_id(i) for i in range(n)],
            records=synthetic_records(corpus, chunks()),
            vectors=(vectors for _, vectors in chunks()),
            captions=captions,
            factory=factory,
            meta={"model": identity, "checkpoint": checkpoint, "source": source},
        )
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    with layout.locked(root):
        version = layout.publish(root, staged)
        live.reset_log(root / layout.LIVE_LOG, version, dim)
    return json.loads((layout.version_dir(root, version) / "meta.json").read_text("utf-8"))
