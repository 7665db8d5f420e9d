"""Service settings: one pydantic-settings class read from `ATRI_*` environment variables,
reached through the cached `get_settings()`. docs/service.md lists every variable."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from atri.index.milvus import DEPTH
from atri.index.opener import BackendName
from atri.training.encoders.threads import ThreadSettings
from atri.training.languages import ENGLISH, LANGS

WORKER_THREADS = 40  # anyio's default thread pool, which runs the sync routes (engine.py)
MAX_BLOCKING = 32  # heavy + waiting requests at most: 8 threads stay free for other routes


def _split_list(value: object) -> object:
    """`ATRI_CORS_ORIGINS=https://a.example,https://b.example` or a JSON list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(ThreadSettings):
    """Everything the service can be told (ATRI_THREADS, `threads`, comes from
    ThreadSettings, which every command reads). Paths are resolved when the service loads."""

    model_config = SettingsConfigDict(env_prefix="ATRI_", extra="ignore", validate_default=True)

    # what to serve
    index_dir: Path | None = None  # an `atri index build` directory
    checkpoint: str | None = None  # None: the checkpoint named by the index's meta.json
    audio_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # ^ /audio/{id} serves files only below these; empty: the index's corpus directory

    # index backend (docs/scaling.md): "faiss" serves index_dir itself; "milvus" serves
    # Milvus collections, filled from index_dir when absent (uploads stay in index_dir)
    backend: BackendName = "faiss"
    milvus_uri: str | None = None  # a milvus-lite file (*.db) or a server, http://host:19530
    milvus_token: SecretStr | None = None  # a server's "user:password" or API key
    milvus_prefix: str = Field(default="atri", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    milvus_depth: int = Field(default=DEPTH, ge=1)  # results /consistency ranks within
    # seconds between checks for a version another process published into index_dir (a
    # rebuild, a compaction), which is then served without a restart; 0: never checked
    # (admin changes still switch to it)
    index_poll_s: float = Field(default=2.0, ge=0)

    # where to listen (`atri serve`)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)  # 0: any free port

    # admin endpoints (POST/DELETE /clips) are disabled (404) while no token is set
    admin_token: SecretStr | None = None
    # browser origins allowed by CORS; empty: CORS off
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # uploads
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0)  # whole request body, streamed
    max_duration_s: float = Field(default=600.0, gt=0)
    min_duration_s: float = Field(default=0.1, ge=0)

    # what POST /clips accepts (422 beyond, naming the limit): embedding a caption costs
    # time in proportion to its length while every search waits for the model
    max_caption_chars: int = Field(default=1000, ge=1)
    max_captions_per_language: int = Field(default=32, ge=1)
    max_caption_languages: int = Field(default=len(LANGS), ge=1)
    max_meta_bytes: int = Field(default=4096, ge=2)  # the meta JSON as sent, UTF-8
    max_id_chars: int = Field(default=128, ge=1, le=128)  # the manifest pattern allows 128

    # language detection when /search gets no `lang`
    lang_confidence_threshold: float = Field(default=0.5, ge=0, le=1)
    fallback_lang: str = ENGLISH  # one of languages.LANGS

    # load: requests that embed audio or run an exact pass over the index
    max_heavy_requests: int = Field(default=2, ge=1)
    # heavy requests that may wait for a slot; more are refused at once (503), since each
    # waiter holds one of the server's WORKER_THREADS (the validator keeps the sum with
    # max_heavy_requests at most MAX_BLOCKING, or other routes queue behind the waiters)
    max_waiting_requests: int = Field(default=16, ge=0)
    # seconds a request may wait for the model or a heavy slot (then 503), and the
    # ffmpeg decoder's time limit
    request_timeout_s: float = Field(default=30.0, gt=0)
    # text queries encoded at once (service/encoding.py); None: one per core when the text
    # encoder takes concurrent calls (e5-small), else 1
    encode_workers: int | None = Field(default=None, ge=1)
    encode_max_batch: int = Field(default=32, ge=1)  # queries per encoder call under load

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"

    @field_validator("audio_dirs", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _split_list(value)

    @model_validator(mode="after")
    def _waiters_leave_threads(self) -> Settings:
        total = self.max_heavy_requests + self.max_waiting_requests
        if total > MAX_BLOCKING:
            raise ValueError(
                f"max_heavy_requests + max_waiting_requests = {total}: at most {MAX_BLOCKING}, "
                f"so that {WORKER_THREADS - MAX_BLOCKING} of the {WORKER_THREADS} worker threads "
                "stay free for other routes"
            )
        return self

    @field_validator("fallback_lang")
    @classmethod
    def _known_lang(cls, value: str) -> str:
        if value not in LANGS:
            raise ValueError(f"{value!r} is not one of {list(LANGS)}")
        return value


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
