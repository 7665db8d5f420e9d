"""Embedding a corpus into a new index version (docs/index.md, "Building").

Clips are decoded and embedded a batch at a time and every batch is saved as a numbered
shard under `INDEX_DIR/.work/<key>/` before the next one starts, so memory holds one
batch and an interrupted build resumes where it stopped: a rerun with the same model
and clips skips the shards that exist. Captions are embedded the same way, each
distinct string once per language, a vocabulary's labels (index/vocabulary.py) after the
clips' captions. The version is then written from the shards
(streamed), published atomically, and the shards removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atri.index import carry, faiss_util, layout, live
from atri.index.version import CaptionSource, write_version
from atri.index.vocabulary import Vocabulary
from atri.training.data.audio_io import load_audio
from atri.training.data.features import AUDIO_BATCH, TEXT_BATCH
from atri.training.data.manifest import ClipRecord
from atri.training.fileio import atomic_write
from atri.training.languages import LANGS
from atri.training.progress import Progress

log = logging.getLogger(__name__)


BatchHook = Callable[[str, int], None]  # (shard name, batch index), after each saved batch
Captions = dict[str, tuple[list[str], list[list[str]]]]  # lang -> (texts, clip ids of each)


def distinct_captions(records: Sequence[ClipRecord]) -> Captions:
    """lang -> (distinct captions in first-seen order, the clips carrying each), in
    LANGS order; a clip listing a caption twice is named once."""
    found: dict[str, dict[str, list[str]]] = {}
    for record in records:
        for lang, texts in record.captions.items():
            table = found.setdefault(lang, {})
            for text in dict.fromkeys(texts):
                table.setdefault(text, []).append(record.id)
    ordered = [lang for lang in LANGS if lang in found] + sorted(set(found) - set(LANGS))
    return {lang: (list(found[lang]), list(found[lang].values())) for lang in ordered}


def with_labels(captions: Captions, vocabulary: Vocabulary) -> Captions:
    """`captions` plus every vocabulary label a language lacks, as a caption of no clip
    (a label that some clip also carries stays that caption, with its clips); LANGS
    order."""
    merged = {
        lang: (list(texts), [list(c) for c in ids]) for lang, (texts, ids) in captions.items()
    }
    for lang, labels in vocabulary.labels.items():
        texts, clip_ids = merged.setdefault(lang, ([], []))
        known = set(texts)
        new = [label for label in labels if label not in known]
        texts += new
        clip_ids += [[] for _ in new]
    ordered = [lang for lang in LANGS if lang in merged] + sorted(set(merged) - set(LANGS))
    return {lang: merged[lang] for lang in ordered}


def work_key(identity: dict[str, Any], records: Sequence[ClipRecord], batches: tuple) -> str:
    """Shards are reused only for the same model, clips (ids, files, captions), batch
    sizes and vocabulary."""
    digest = hashlib.sha256(json.dumps([identity, batches], sort_keys=True).encode())
    for record in records:
        stat = os.stat(record.audio)
        digest.update(record.to_json().encode())
        digest.update(f"|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def save_shard(path: Path, array: np.ndarray) -> None:
    """Atomically: a shard on disk is always complete."""
    atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array, dtype=np.float32)))


def embed_shards(
    work: Path,
    name: str,
    sizes: Sequence[int],
    embed: Callable[[int], np.ndarray],
    bar: Progress,
    on_batch: BatchHook | None,
) -> list[Path]:
    """Shard b = embed(b), (sizes[b], E), for every b that has no shard yet."""
    paths = [work / f"{name}-{b:06d}.npy" for b in range(len(sizes))]
    for b, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        if not path.exists():
            vectors = embed(b)
            if vectors.shape[0] != size:
                raise RuntimeError(
                    f"{name} batch {b}: {vectors.shape[0]} vectors for {size} inputs"
                )
            save_shard(path, vectors)
            if on_batch is not None:
                on_batch(name, b)
        bar.update(size)
    return paths


def read_shards(paths: Sequence[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        yield np.load(path)


def _sizes(n: int, batch: int) -> list[int]:
    return [min(batch, n - start) for start in range(0, n, batch)]


def embed_audio_shards(
    model: Any, records: Sequence[ClipRecord], work: Path, batch: int, on_batch: BatchHook | None
) -> list[Path]:
    def embed(b: int) -> np.ndarray:
        chunk = records[b * batch : (b + 1) * batch]
        waves = [torch.from_numpy(load_audio(r.audio, model.sample_rate)) for r in chunk]
        with torch.inference_mode():
            return model.embed_audio(waves).float().cpu().numpy()  # (B, E)

    with Progress(len(records), "embed audio", unit="clip") as bar:
        return embed_shards(work, "audio", _sizes(len(records), batch), embed, bar, on_batch)


def embed_caption_shards(
    model: Any,
    captions: Captions,
    work: Path,
    batch: int,
    on_batch: BatchHook | None,
) -> dict[str, list[Path]]:
    total = sum(len(texts) for texts, _ in captions.values())
    out = {}
    with Progress(total, "embed captions", unit="caption") as bar:
        for lang, (texts, _) in captions.items():

            def embed(b: int, texts: list[str] = texts, lang: str = lang) -> np.ndarray:
                with torch.inference_mode():
                    vectors = model.embed_text(texts[b * batch : (b + 1) * batch], lang)
                return vectors.float().cpu().numpy()  # (B, E)

            sizes = _sizes(len(texts), batch)
            out[lang] = embed_shards(work, f"text-{lang}", sizes, embed, bar, on_batch)
    return out


def build_index(
    model: Any,
    records: Sequence[ClipRecord],
    root: str | Path,
    *,
    factory: str | None = None,
    meta: dict[str, Any] | None = None,
    audio_batch: int = AUDIO_BATCH,
    text_batch: int = TEXT_BATCH,
    on_batch: BatchHook | None = None,
    vocabulary: Vocabulary | None = None,
    drop_live_changes: bool = False,
    on_step: layout.StepHook | None = None,
) -> int:
    """Embed `records` (audio paths absolute) with `model` and publish them as the new
    current version of the index at `root`; returns its number. `factory` None picks
    the kind by size (faiss_util.choose_factory). `meta` adds e.g. checkpoint and source
    to meta.json. `vocabulary` adds its labels to the caption index and its name, hash
    and counts to meta.json. Rerunning after an interruption reuses the finished
    batches. The live changes of the version replaced are carried into the new one
    (index/carry.py) unless `drop_live_changes`; `on_step` (tests) is called at each of
    layout.PUBLISH_STEPS."""
    root = Path(root).resolve()
    if not records:
        raise ValueError("nothing to index: no clips")
    faiss_util.configure()
    model.eval()
    identity = model.identity()
    dim = int(model.config.embed_dim)
    labels = vocabulary.sha256 if vocabulary is not None else None
    work = work_dir(root, work_key(identity, records, (audio_batch, text_batch, dim, labels)))
    captions = distinct_captions(records)
    if vocabulary is not None:
        captions = with_labels(captions, vocabulary)
        meta = {**(meta or {}), "vocabulary": vocabulary.meta()}
    label_sets = {lang: set(v) for lang, v in vocabulary.labels.items()} if vocabulary else {}
    audio_paths = embed_audio_shards(model, records, work, audio_batch, on_batch)
    caption_paths = embed_caption_shards(model, captions, work, text_batch, on_batch)

    staged = layout.staging_dir(root)
    try:
        write_version(
            staged,
            dim=dim,
            ids=[r.id for r in records],
            records=records,
            vectors=read_shards(audio_paths),
            captions={
                lang: CaptionSource(
                    texts, clip_ids, read_shards(caption_paths[lang]), label_sets.get(lang, set())
                )
                for lang, (texts, clip_ids) in captions.items()
            },
            factory=factory,
            meta={"model": identity, **(meta or {})},
        )
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    version = publish(
        root, staged, dim, embed=reembedder(model), drop=drop_live_changes, on_step=on_step
    )
    shutil.rmtree(work, ignore_errors=True)
    return version


def reembedder(model: Any) -> carry.Embed:
    """Embeds a clip carried from a version built with another model."""

    def embed(record: ClipRecord) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        wave = torch.from_numpy(load_audio(record.audio, model.sample_rate))
        with torch.inference_mode():
            audio = model.embed_audio([wave]).float().cpu().numpy()[0]  # (E,)
            captions = {
                lang: model.embed_text(texts, lang).float().cpu().numpy()  # (C, E)
                for lang, texts in record.captions.items()
            }
        return audio, captions

    return embed


def work_dir(root: Path, key: str) -> Path:
    """INDEX_DIR/.work/<key>, other keys' shards removed (a changed model or corpus
    cannot reuse them)."""
    work_root = root / layout.WORK
    work = work_root / key
    if work_root.is_dir():
        for stale in work_root.iterdir():
            if stale.name != key:
                shutil.rmtree(stale, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    resumed = len(list(work.glob("*.npy")))
    if resumed:
        log.info("resuming the build in %s: %d batch(es) already embedded", work, resumed)
    return work


def publish(
    root: Path,
    staged: Path,
    dim: int,
    *,
    embed: carry.Embed | None = None,
    drop: bool = False,
    on_step: layout.StepHook | None = None,
) -> int:
    """Make the staged version current, with the live changes of the version it replaces
    carried over (or, `drop`, discarded with a warning), and start its empty live log;
    returns its number. Everything happens under the index lock, so no change can be
    acknowledged between reading the log and replacing it."""
    log_path = root / layout.LIVE_LOG
    with layout.locked(root):
        if drop:
            pending = carry.pending_changes(root)
            if pending:
                log.warning(
                    "%s: dropping %d live change(s) to version %s, as asked (%s)",
                    log_path, pending, layout.current_version(root), carry.DROP_FLAG,
                )  # fmt: skip
        else:
            try:
                staged, carried = carry.merge_live_changes(root, staged, embed)
            except BaseException:
                shutil.rmtree(staged, ignore_errors=True)
                raise
            if carried is not None:
                log.info(
                    "carried the live changes of version %d: %d clip(s) added, %d deleted, "
                    "%d added but already in the source%s",
                    carried.from_version, len(carried.added), len(carried.deleted),
                    len(carried.in_source), " (re-embedded)" if carried.reembedded else "",
                )  # fmt: skip
        version = layout.publish(root, staged, on_step=on_step)
        live.reset_log(log_path, version, dim)
        if on_step is not None:
            on_step("log-replaced")
    return version
