"""Frozen-backbone features, computed once and read back from disk.

A frozen audio backbone or text encoder gives every clip and caption the same raw
features in every epoch, so a run that trains only the heads and the temperature computes
them once (minutes for aisfx over a corpus) and then trains in seconds per epoch.

Audio: `audio_features(model, paths, cache_dir)` -> (N, audio_dim), streaming the clips
not cached yet through `model.audio_features` a batch at a time (bounded memory, progress
bar) and writing them in parts as it goes, so an interrupted extraction keeps its work.

    <cache_dir>/audio/<backbone>-<hash>/meta.json    the backbone identity (weights sha256,
                                                     sample rate) that <hash> digests
    <cache_dir>/audio/<backbone>-<hash>/part-*.npz   keys (n, 32) uint8, vectors (n, D) f32

A key is sha256(absolute path, size, mtime_ns) of the audio file, so an edited or replaced
file is a miss; parts are written to a temp file and renamed (readers never see half a
part), and once there are many they are merged into one.

Text: `text_features(encoder, manifest, langs, cache_dir)` -> every caption of every
training language through `text_cache.encode_cached` (its own store under
<cache_dir>/text), as one (T, text_dim) matrix plus an index (N, K, C) -> row.

Augmented views of training clips live in the same audio store (feature_views.py).
What the trainer reads from these caches is in batches.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atri.training.data.audio_io import load_audio
from atri.training.data.manifest import Manifest
from atri.training.data.text_cache import encode_cached
from atri.training.encoders.model import RetrievalModel
from atri.training.encoders.text_encoder import TextEncoder
from atri.training.fileio import atomic_write
from atri.training.progress import Progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEY_BYTES = 32
AUDIO_BATCH = 16  # clips per backbone call (every embedder's default: one home)
TEXT_BATCH = 256  # captions per text-encoder call
FLUSH_EVERY = 512  # clips per part file
TEXT_CHUNK = 4096  # captions per encode_cached call: progress, and work kept if stopped
MAX_PARTS = 16  # more parts than this are merged into one
EVAL_BATCH = 1024  # rows per projection call when validating


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """The one cache `atri train`, `atri eval` and `atri embed` share by default:
    $XDG_CACHE_HOME/atri/features, else ~/.cache/atri/features. `environ` is the
    process's environment, which its entry passes (os.environ)."""
    root = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "atri" / "features"


class FeatureCacheError(RuntimeError):
    """A cache folder holds files this code did not write, or for another backbone."""


def clip_key(path: Path) -> bytes:
    """Identity of one audio file's content as far as the file system tells: path, size
    and modification time (reading every file to hash it would cost as much as decoding)."""
    path = Path(path).resolve()
    st = path.stat()
    return hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).digest()


def backbone_identity(model: RetrievalModel) -> dict[str, str | int]:
    """The part of `model.identity()` that determines audio features."""
    identity = model.identity()
    return {
        "audio_backbone": identity["audio_backbone"],
        "audio_weights_sha256": identity["audio_weights_sha256"],
        "sample_rate": int(model.sample_rate),
    }


class AudioFeatureStore:
    """One backbone's cached clip features: a folder of part files (module docstring)."""

    def __init__(self, cache_dir: Path, identity: dict[str, str | int], dim: int) -> None:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        slug = re.sub(r"[^A-Za-z0-9._-]", "_", str(identity["audio_backbone"]))
        self.folder = Path(cache_dir) / "audio" / f"{slug}-{digest[:16]}"
        self.meta = {**identity, "dim": dim, "format": FORMAT_VERSION}
        self.dim = dim

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.npz"))

    def read(self) -> dict[bytes, np.ndarray]:
        """Every cached row, key -> (D,) float32."""
        if not self.folder.is_dir():
            return {}
        self._check_meta()
        for _ in range(3):  # a concurrent merge may delete a part between glob and open
            try:
                rows: dict[bytes, np.ndarray] = {}
                for part in self._parts():
                    rows.update(self._read_part(part))
                return rows
            except FileNotFoundError:
                continue
        raise FeatureCacheError(f"{self.folder}: parts kept vanishing while reading")

    def _read_part(self, part: Path) -> dict[bytes, np.ndarray]:
        try:
            with np.load(part, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise FeatureCacheError(f"unreadable feature cache part {part}: {exc}") from exc
        if keys.shape != (len(keys), KEY_BYTES) or vectors.shape != (len(keys), self.dim):
            raise FeatureCacheError(
                f"{part}: keys {keys.shape}, vectors {vectors.shape}; expected "
                f"(n, {KEY_BYTES}), (n, {self.dim})"
            )
        return {k.tobytes(): v for k, v in zip(keys, vectors.astype(np.float32), strict=True)}

    def _check_meta(self) -> None:
        path = self.folder / "meta.json"
        if path.exists() and json.loads(path.read_text()) != self.meta:
            raise FeatureCacheError(f"{path} describes another backbone than {self.meta}")

    def write(self, rows: dict[bytes, np.ndarray]) -> None:
        """Add rows as a new part file (atomic), merging the parts once there are many."""
        if not rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "meta.json"
        if not meta.exists():
            atomic_write(meta, lambda f: f.write(json.dumps(self.meta, indent=2).encode()))
        self._check_meta()
        _write_part(self.folder / f"part-{uuid.uuid4().hex}.npz", rows, self.dim)
        parts = self._parts()
        if len(parts) > MAX_PARTS:
            merged: dict[bytes, np.ndarray] = {}
            for part in parts:
                merged.update(self._read_part(part))
            _write_part(self.folder / f"part-{uuid.uuid4().hex}.npz", merged, self.dim)
            for part in parts:
                part.unlink(missing_ok=True)


def _write_part(path: Path, rows: dict[bytes, np.ndarray], dim: int) -> None:
    keys = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), KEY_BYTES)
    vectors = np.stack(list(rows.values())).astype(np.float32).reshape(len(rows), dim)
    atomic_write(path, lambda f: np.savez(f, keys=keys, vectors=vectors))


def wave_batches(
    paths: Sequence[Path], sample_rate: int, batch_size: int = AUDIO_BATCH
) -> Iterator[list[torch.Tensor]]:
    """Decoded clips (lists of (T_i,) float32) in the order of `paths`, `batch_size` at a time."""
    for start in range(0, len(paths), batch_size):
        yield [
            torch.from_numpy(load_audio(p, sample_rate)) for p in paths[start : start + batch_size]
        ]


def audio_features(
    model: RetrievalModel,
    paths: Sequence[Path],
    cache_dir: Path,
    batch_size: int = AUDIO_BATCH,
) -> torch.Tensor:
    """(N, audio_dim) float32 frozen-backbone features of the clips at `paths`, computing
    and caching only those not cached yet. Refuses a trainable backbone (its features
    change as it trains)."""
    store = frozen_store(model, cache_dir)
    keys = [clip_key(p) for p in paths]
    found = store.read()
    missing = [(k, p) for k, p in dict(zip(keys, paths, strict=True)).items() if k not in found]
    sr = model.sample_rate
    fill(model, store, found,
         [(k, lambda p=p: torch.from_numpy(load_audio(p, sr))) for k, p in missing], batch_size)
    return torch.from_numpy(np.stack([found[k] for k in keys]).reshape(len(keys), model.audio_dim))


def frozen_store(model: RetrievalModel, cache_dir: Path) -> AudioFeatureStore:
    """The feature store of the model's audio backbone; refuses a trainable one."""
    if model.config.audio_trains:
        raise ValueError("the audio backbone is trainable (whole, or its top blocks): its "
                         "features cannot be cached")
    return AudioFeatureStore(cache_dir, backbone_identity(model), model.audio_dim)


def fill(
    model: RetrievalModel,
    store: AudioFeatureStore,
    found: dict[bytes, np.ndarray],
    missing: Sequence[tuple[bytes, Callable[[], torch.Tensor]]],
    batch_size: int = AUDIO_BATCH,
) -> None:
    """Stream the waveforms of `missing` (key, loader of a (T,) float32 wave at the
    model's rate) through the backbone, a batch at a time, into `store` and `found`."""
    if not missing:
        return
    log.info("audio features: %d clips to compute into %s", len(missing), store.folder)
    pending: dict[bytes, np.ndarray] = {}
    with Progress(len(missing), "audio features", unit="clip") as bar:
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            feats = model.audio_features([load() for _, load in chunk])  # (b, audio_dim)
            pending.update(zip([k for k, _ in chunk], feats.float().cpu().numpy(), strict=True))
            if len(pending) >= FLUSH_EVERY:
                store.write(pending)
                found.update(pending)
                pending = {}
            bar.update(len(chunk))
    store.write(pending)
    found.update(pending)


@dataclass(frozen=True)
class TextFeatures:
    """Every caption's features: `vectors[rows[i, k, j]]` is caption j of clip i in
    language k (of the training languages), rows -1 where the clip lacks it."""

    vectors: torch.Tensor  # (T, text_dim) float32
    rows: np.ndarray  # (N, K, C) int64, C the largest caption count


def caption_rows(manifest: Manifest, langs: Sequence[str]) -> tuple[np.ndarray, list[list[str]]]:
    """The row index (N, K, C) of each caption in language-major order, and per language
    the list of captions in that order."""
    n_max = max((r.n_captions() for r in manifest), default=0)
    rows = np.full((len(manifest), len(langs), n_max), -1, dtype=np.int64)
    texts: list[list[str]] = []
    next_row = 0
    for k, lang in enumerate(langs):
        lang_texts: list[str] = []
        for i, record in enumerate(manifest):
            captions = record.captions.get(lang, [])
            rows[i, k, : len(captions)] = np.arange(len(captions)) + next_row + len(lang_texts)
            lang_texts.extend(captions)
        texts.append(lang_texts)
        next_row += len(lang_texts)
    return rows, texts


def text_features(
    encoder: TextEncoder, manifest: Manifest, langs: Sequence[str], cache_dir: Path
) -> TextFeatures:
    """Frozen text-encoder features of every caption of `manifest` in `langs`."""
    rows, texts = caption_rows(manifest, langs)
    blocks = []
    with Progress(sum(map(len, texts)), "text features", unit="caption") as bar:
        for lang, lang_texts in zip(langs, texts, strict=True):
            for start in range(0, len(lang_texts), TEXT_CHUNK):
                chunk = lang_texts[start : start + TEXT_CHUNK]
                blocks.append(encode_cached(encoder, chunk, lang, Path(cache_dir) / "text"))
                bar.update(len(chunk))
    vectors = torch.cat(blocks) if blocks else torch.empty(0, encoder.dim)  # (T, text_dim)
    return TextFeatures(vectors=vectors, rows=rows)
