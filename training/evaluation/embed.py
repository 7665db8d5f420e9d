"""A checkpoint's embeddings of a manifest's clips and captions (`atri embed`, and the
streaming embedder that `atri eval` shares).

Audio is decoded and embedded a batch at a time (a generator, as faiss contrib's
`exhaustive_search` streams its queries), so memory holds one batch of waveforms plus
the (N, E) output; captions likewise. Frozen backbone and text features come from (and
go to) the trainer's caches (features.py, text_cache.py) unless `--no-cache`.

The .npz file (`np.load(f)` needs no pickle) holds, whatever `--what` selects:

    audio_ids            (N,) str    clip ids, manifest order
    audio_vectors        (N, E) f32  L2-normalised
    text_ids             (M,) str    the clip of each caption
    text_lang            (M,) str    ISO 639-3 code
    text_caption_index   (M,) int    j in captions[lang][j]
    text                 (M,) str    the caption
    text_vectors         (M, E) f32  L2-normalised
    meta                 () str      JSON: checkpoint, identity, manifest sha256
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from atri.training.data import features
from atri.training.data.features import AUDIO_BATCH, TEXT_BATCH
from atri.training.data.manifest import Manifest, ManifestError
from atri.training.data.text_cache import encode_cached
from atri.training.encoders.model import RetrievalModel
from atri.training.languages import LANGS
from atri.training.progress import Progress


class ManifestEmbeddings(NamedTuple):
    """audio (N, E) or None; text[lang] (N, C, E), zeros where absent; present[lang]
    (N, C) bool; captions[lang][i] clip i's captions ([] if it lacks the language).
    C is the largest caption count of any clip."""

    audio: np.ndarray | None
    text: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    captions: dict[str, list[list[str]]]


def audio_feature_batches(
    model: RetrievalModel, manifest: Manifest, batch_size: int, cache_dir: Path | None
) -> Iterator[torch.Tensor]:
    """Raw backbone features (B, audio_dim) of the clips, in manifest order."""
    return path_feature_batches(model, [manifest.audio_path(r) for r in manifest], batch_size,
                                cache_dir)


def path_feature_batches(
    model: RetrievalModel, paths: Sequence[Path], batch_size: int, cache_dir: Path | None
) -> Iterator[torch.Tensor]:
    """Raw backbone features (B, audio_dim) of the audio files, in order: from the on-disk
    feature cache (features.py) when `cache_dir` is given and the backbone is frozen, else
    decoded and run a batch at a time."""
    if cache_dir is not None and not model.config.audio_trains:
        feats = features.audio_features(model, paths, cache_dir, batch_size)  # (N, audio_dim)
        yield from feats.split(batch_size)
        return
    for waves in features.wave_batches(paths, model.sample_rate, batch_size):
        yield model.audio_features(waves)  # (B, audio_dim)


@torch.inference_mode()
def embed_audio(
    model: RetrievalModel,
    manifest: Manifest,
    batch_size: int = AUDIO_BATCH,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """(N, E) float32 audio embeddings of the manifest's clips, in its order."""
    out = np.empty((len(manifest), model.config.embed_dim), dtype=np.float32)
    done = 0
    with Progress(len(manifest), "embed audio", unit="clip") as bar:
        for feats in audio_feature_batches(model, manifest, batch_size, cache_dir):
            out[done : done + len(feats)] = model.project_audio(feats).float().cpu().numpy()
            done += len(feats)
            bar.update(len(feats))
    return out


def manifest_captions(
    manifest: Manifest, langs: Sequence[str]
) -> tuple[dict[str, list[list[str]]], dict[str, np.ndarray]]:
    """captions[lang][i] and the (N, C) presence mask of each language."""
    n_slots = max((r.n_captions() for r in manifest), default=0)
    captions = {lang: [list(r.captions.get(lang, [])) for r in manifest] for lang in langs}
    present = {}
    for lang in langs:
        mask = np.zeros((len(manifest), n_slots), dtype=bool)
        for i, texts in enumerate(captions[lang]):
            mask[i, : len(texts)] = True
        present[lang] = mask
    return captions, present


def text_feature_batches(
    model: RetrievalModel, texts: list[str], lang: str, batch_size: int, cache_dir: Path | None
) -> Iterator[torch.Tensor]:
    """Raw text features (b, text_dim) of `texts` in order, through the text cache
    (text_cache.py, the layout features.text_features uses) when `cache_dir` is given and
    the encoder is frozen. The cache is read and extended once per language: it rewrites
    its whole file on a miss, so per-batch calls would cost quadratic time."""
    if cache_dir is not None and not model.config.text_trains:
        feats = encode_cached(model.text_encoder, texts, lang, Path(cache_dir) / "text")
        yield from feats.split(batch_size)  # (b, text_dim) each
        return
    for start in range(0, len(texts), batch_size):
        yield model.text_features(texts[start : start + batch_size], lang)  # (b, text_dim)


@torch.inference_mode()
def embed_texts(
    model: RetrievalModel,
    captions: dict[str, list[list[str]]],
    present: dict[str, np.ndarray],
    batch_size: int = TEXT_BATCH,
    cache_dir: Path | None = None,
) -> dict[str, np.ndarray]:
    """text[lang] (N, C, E) float32, zeros where a caption is absent."""
    total = sum(int(m.sum()) for m in present.values())
    out = {}
    with Progress(total, "embed text", unit="caption") as bar:
        for lang, mask in present.items():
            flat = [t for texts in captions[lang] for t in texts]  # row-major over present
            vectors = np.zeros((len(flat), model.config.embed_dim), dtype=np.float32)  # (M, E)
            done = 0
            for feats in text_feature_batches(model, flat, lang, batch_size, cache_dir):
                vectors[done : done + len(feats)] = model.project_text(feats).float().cpu().numpy()
                done += len(feats)
                bar.update(len(feats))
            grid = np.zeros((*mask.shape, vectors.shape[1]), dtype=np.float32)  # (N, C, E)
            grid[mask] = vectors
            out[lang] = grid
    return out


def embed_manifest(
    model: RetrievalModel,
    manifest: Manifest,
    langs: Sequence[str] | None = None,
    *,
    audio: bool = True,
    text: bool = True,
    audio_batch: int = AUDIO_BATCH,
    text_batch: int = TEXT_BATCH,
    cache_dir: Path | None = None,
) -> ManifestEmbeddings:
    """Embed a manifest's clips and captions (in `langs`, default every language some
    clip has, in LANGS order). Unpacks as (audio, text, present, captions), the
    arguments of `metrics.evaluate_embeddings`. `cache_dir`: reuse and extend the
    frozen-feature caches there (features.py), so that evaluating many checkpoints of
    one backbone decodes and encodes the test set once."""
    langs = list(langs) if langs is not None else manifest_languages(manifest)
    model.eval()
    captions, present = manifest_captions(manifest, langs)
    audio_vectors = embed_audio(model, manifest, audio_batch, cache_dir) if audio else None
    texts = embed_texts(model, captions, present, text_batch, cache_dir) if text else {}
    return ManifestEmbeddings(audio_vectors, texts, present, captions)


def manifest_languages(manifest: Manifest) -> list[str]:
    """The languages any clip has captions in, in LANGS order."""
    found = {lang for r in manifest for lang in r.captions}
    return [lang for lang in LANGS if lang in found]


def check_langs(manifest: Manifest, langs: Sequence[str] | None) -> list[str]:
    """Validated evaluation languages: known codes that some clip has; raises
    ManifestError naming the problem."""
    if langs is None:
        return manifest_languages(manifest)
    unknown = [lang for lang in langs if lang not in LANGS]
    if unknown:
        raise ManifestError(f"unknown language code(s) {unknown}; expected some of {list(LANGS)}")
    if len(set(langs)) != len(langs):
        raise ManifestError(f"a language is given twice: {list(langs)}")
    absent = [lang for lang in langs if not any(lang in r.captions for r in manifest)]
    if absent:
        raise ManifestError(f"{manifest.path}: no clip has captions in {absent}")
    return list(langs)


def npz_arrays(
    manifest: Manifest, emb: ManifestEmbeddings, meta: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The arrays of the .npz layout in the module docstring."""
    ids = [r.id for r in manifest]
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta, sort_keys=True))}
    if emb.audio is not None:
        arrays["audio_ids"] = np.array(ids, dtype=str)
        arrays["audio_vectors"] = emb.audio
    if emb.text:
        slots = [(lang, i, j) for lang, mask in emb.present.items() for i, j in np.argwhere(mask)]
        arrays["text_ids"] = np.array([ids[i] for _, i, _ in slots], dtype=str)
        arrays["text_lang"] = np.array([lang for lang, _, _ in slots], dtype=str)
        arrays["text_caption_index"] = np.array([j for _, _, j in slots], dtype=np.int64)
        arrays["text"] = np.array([emb.captions[lang][i][j] for lang, i, j in slots], dtype=str)
        dim = next(iter(emb.text.values())).shape[-1]
        arrays["text_vectors"] = (
            np.concatenate([emb.text[lang][emb.present[lang]] for lang in emb.text])
            if slots else np.zeros((0, dim), dtype=np.float32)
        )
    return arrays
