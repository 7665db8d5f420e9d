"""Audio-to-text search (POST /search/audio): the best captions in a language for an
uploaded recording, and the indexed clips that sound most like it."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from atri.service.deps import EngineDep, SettingsDep
from atri.service.languages import resolve
from atri.service.routes.common import audio_url, elapsed_ms, errors
from atri.service.schemas import MAX_K, AudioSearchResponse, CaptionHit, ClipHit
from atri.service.settings import Settings
from atri.service.upload import DurationLimits, decode_upload

router = APIRouter(tags=["search"])


def duration_limits(settings: Settings) -> DurationLimits:
    return DurationLimits(min_s=settings.min_duration_s, max_s=settings.max_duration_s)


@router.post(
    "/search/audio", response_model=AudioSearchResponse, responses=errors(413, 415, 422, 503)
)
def search_audio(
    engine: EngineDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="audio: wav, flac, ogg, mp3, webm, m4a ...")],
    lang: Annotated[str, Form(description="language of the captions")] = "eng",
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
) -> AudioSearchResponse:
    started = time.perf_counter()
    lang = resolve(lang)
    with engine.heavy():
        decoded = decode_upload(
            file.file.read(),
            engine.sample_rate,
            duration_limits(settings),
            name=file.filename or "upload",
            timeout_s=settings.request_timeout_s,
        )
        query = engine.embed_audio(decoded.wave)  # (E,)
    captions = engine.search_captions(query, lang, k)
    clips = engine.search(query, k)
    return AudioSearchResponse(
        lang=lang,
        k=k,
        took_ms=elapsed_ms(started),
        duration_s=round(decoded.duration_s, 3),
        captions=[
            CaptionHit(
                rank=r,
                text=text,
                score=round(float(score), 6),
                clip_ids=list(clip_ids),
                # the backends drop captions no live clip carries, except vocabulary labels
                source="index" if clip_ids else "vocabulary",
            )
            for r, (text, score, clip_ids) in enumerate(captions, start=1)
        ],
        similar_clips=[
            ClipHit(rank=r, id=clip_id, score=round(float(score), 6), audio_url=audio_url(clip_id))
            for r, (clip_id, score) in enumerate(clips, start=1)
        ],
    )
