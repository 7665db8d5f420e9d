"""Pydantic models of every request and response body (shared spec api.md)."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAX_QUERY_CHARS = 1000
MAX_K = 100
MAX_OFFSET = 10_000

K = Annotated[int, Field(ge=1, le=MAX_K, description="number of results, 1..100")]
Offset = Annotated[int, Field(ge=0, le=MAX_OFFSET, description="results to skip (paging)")]
MetaValue = str | int | float | bool


def normalise_query(text: str) -> str:
    """NFKC, surrounding whitespace stripped; empty or over 1,000 characters is an error."""
    text = unicodedata.normalize("NFKC", text).strip()
    try:  # JSON may escape a lone UTF-16 surrogate: no text encoder can encode it
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"query is not valid Unicode text: {exc.reason}") from exc
    if not text:
        raise ValueError("query is empty or whitespace")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"query has {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
    return text


QueryText = Annotated[str, AfterValidator(normalise_query)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- health, languages ---------------------------------------------------------------------


class VocabularyInfo(BaseModel):
    """The label vocabulary an index was built with (its meta.json)."""

    name: str = Field(description="'default' (the concept lexicon) or the file it came from")
    sha256: str = Field(description="hash of the labels")
    labels: dict[str, int] = Field(description="number of labels per language")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    index_size: int
    captions_indexed: int
    model: str
    languages: list[str]
    index_version: int | None = Field(
        None,
        description="the index version served; a rebuild or compaction publishes a new one, "
        "served within ATRI_INDEX_POLL_S",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what serves but not as well as it should, e.g. an approximate index "
        "whose tuning fell short of its recall target",
    )
    vocabulary: VocabularyInfo | None = Field(
        None, description="the labels POST /search/audio can answer with besides captions"
    )


class HealthUnavailable(BaseModel):
    status: Literal["loading", "failed"]
    error: str | None = None


class LanguageOut(BaseModel):
    code: str
    name: str
    aliases: list[str]


# --- text-to-audio ------------------------------------------------------------------------


class SearchRequest(Strict):
    """POST /search body; GET /search takes the same fields as query parameters."""

    q: QueryText = Field(
        description=f"query text, NFKC-normalised, 1..{MAX_QUERY_CHARS} characters"
    )
    lang: str | None = Field(None, description="language of q; omitted: detected")
    k: K = 10
    offset: Offset = 0


class SearchHit(BaseModel):
    rank: int
    id: str
    score: float
    audio_url: str
    caption: str | None = None
    meta: dict[str, MetaValue] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    query: str
    lang: str
    k: int
    offset: int = 0
    took_ms: float
    lang_detected: bool = False
    lang_confidence: float | None = None
    lang_candidate: str | None = Field(None, description="the detector's best guess")
    lang_fallback: bool = Field(
        False, description="the guess was below the confidence threshold: lang is the default"
    )
    results: list[SearchHit]


class SimilarResponse(BaseModel):
    id: str
    lang: str
    k: int
    took_ms: float
    results: list[SearchHit]


# --- audio-to-text ------------------------------------------------------------------------


class CaptionHit(BaseModel):
    rank: int
    text: str
    score: float
    clip_ids: list[str] = Field(description="the indexed clips carrying this caption")
    source: Literal["index", "vocabulary"] = Field(
        description="'index': a caption of indexed clips; 'vocabulary': a label of the "
        "vocabulary the index was built with (atri index build --vocabulary), no clip"
    )


class ClipHit(BaseModel):
    rank: int
    id: str
    score: float
    audio_url: str


class AudioSearchResponse(BaseModel):
    lang: str
    k: int
    took_ms: float
    duration_s: float
    captions: list[CaptionHit]
    similar_clips: list[ClipHit]


# --- consistency --------------------------------------------------------------------------


class AtLeast(BaseModel):
    """A rank beyond what a depth-limited backend can see: the true rank is >= at_least."""

    at_least: int


Rank = int | AtLeast


class ConsistencyRequest(Strict):
    queries: dict[str, QueryText] | None = Field(
        None, description="parallel versions of one query, language -> text"
    )
    clip_id: str | None = Field(None, description="use this clip's stored captions as queries")
    caption_index: int = Field(0, ge=0, description="which of the clip's captions (j)")
    k: K = 10

    @model_validator(mode="after")
    def _one_source(self) -> ConsistencyRequest:
        if (self.queries is None) == (self.clip_id is None):
            raise ValueError("give either 'queries' or 'clip_id', not both and not neither")
        if self.queries is not None and not self.queries:
            raise ValueError("'queries' needs at least one language")
        return self


class ClipRanks(BaseModel):
    id: str
    ranks: dict[str, Rank]
    rank_variance: float | None = Field(
        description="population variance over languages; null when a rank is only bounded"
    )
    rank_std: float | None


class RankedClip(BaseModel):
    rank: int
    id: str
    score: float


class ConsistencyResponse(BaseModel):
    languages: list[str]
    k: int
    took_ms: float
    queries: dict[str, str]
    target: ClipRanks | None = None
    clips: list[ClipRanks]
    mean_rank_variance: float | None
    mean_rank_std: float | None
    per_language: dict[str, list[RankedClip]]


# --- clips ----------------------------------------------------------------------------------


class ClipOut(BaseModel):
    """A clip's manifest record; the server-side audio path is given as its URL."""

    id: str
    audio_url: str
    captions: dict[str, list[str]]
    meta: dict[str, MetaValue] = Field(default_factory=dict)


Captions = dict[str, Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]]
Meta = dict[str, MetaValue]
