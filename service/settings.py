"""Service settings: one pydantic-settings class read from `ATRI_*` environment variables,
reached through the cached `get_settings()`. docs/service.md lists every variable."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Lang = Literal["eng", "fra", "deu", "spa", "nld", "cat", "jpn", "zho"]


def _split_list(value: object) -> object:
    """`ATRI_CORS_ORIGINS=https://a.example,https://b.example` or a JSON list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything the service can be told. Paths are resolved when the service loads."""

    model_config = SettingsConfigDict(env_prefix="ATRI_", extra="ignore", validate_default=True)

    # what to serve
    index_dir: Path | None = None  # an `atri index build` directory
    checkpoint: str | None = None  # None: the checkpoint named by the index's meta.json
    audio_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # ^ /audio/{id} serves files only below these; empty: the index's corpus directory

    # index backend (docs/scaling.md): "faiss" serves index_dir itself; "milvus" serves
    # Milvus collections, filled from index_dir when absent (uploads stay in index_dir)
    backend: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str | None = None  # a milvus-lite file (*.db) or a server, http://host:19530
    milvus_token: SecretStr | None = None  # a server's "user:password" or API key
    milvus_prefix: str = Field(default="atri", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    milvus_depth: int = Field(default=16_384, ge=1)  # results /consistency ranks within

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

    # language detection when /search gets no `lang`
    lang_confidence_threshold: float = Field(default=0.5, ge=0, le=1)
    fallback_lang: Lang = "eng"

    # load: requests that embed audio or run an exact pass over the index
    max_heavy_requests: int = Field(default=2, ge=1)
    # heavy requests that may wait for a slot; more are refused at once (503), since each
    # waiter holds one of the server's 40 worker threads (keep the sum with
    # max_heavy_requests well below 40, or other routes queue behind the waiters)
    max_waiting_requests: int = Field(default=16, ge=0)
    # seconds a request may wait for the model or a heavy slot (then 503), and the
    # ffmpeg decoder's time limit
    request_timeout_s: float = Field(default=30.0, gt=0)
    # torch + text encoder threads per call; None: one per core, shared by the encode workers
    threads: int | None = Field(default=None, ge=1)
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


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
