"""Clip records (GET /clips/{id}) and the admin endpoints that change the live index:
POST /clips adds a clip with its captions, DELETE /clips/{id} removes one. Both are
durable once answered.

POST /clips takes bounded input only (Settings: caption length, captions per language,
languages, meta size, id length; docs/service.md): a caption's embedding time grows with
its length while every search waits for the model. `captions` may be `{}`: an audio-only
clip, as `atri index build --audio-dir` indexes a folder (manifest.md); text-to-audio and
audio search find it by its audio."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import TypeAdapter, ValidationError

from atri.service.deps import AdminDep, EngineDep, SettingsDep
from atri.service.engine import Engine
from atri.service.errors import ClipAlreadyExists, InvalidInput
from atri.service.languages import resolve
from atri.service.routes.audio_search import duration_limits
from atri.service.routes.common import audio_url, errors
from atri.service.schemas import Captions, ClipOut, Meta
from atri.service.settings import Settings
from atri.service.upload import decode_upload, save_flac
from atri.training.data.manifest import ID_PATTERN, ClipRecord

log = logging.getLogger(__name__)
router = APIRouter(tags=["clips"])

_captions = TypeAdapter(Captions)
_meta = TypeAdapter(Meta)


def clip_out(record: ClipRecord) -> ClipOut:
    return ClipOut(
        id=record.id, audio_url=audio_url(record.id), captions=record.captions, meta=record.meta
    )


@router.get("/clips/{clip_id}", response_model=ClipOut, responses=errors(404, 503))
def get_clip(clip_id: str, engine: EngineDep) -> ClipOut:
    """The clip's manifest record: captions per language and meta."""
    return clip_out(engine.record(clip_id))


def over_limit(
    field: str, what: str, found: int, setting: str, maximum: int, **where: object
) -> InvalidInput:
    """The 422 of an input beyond one of the Settings limits, naming it: `what` is
    formatted with the count found ("eng[0] has {:,} characters")."""
    env = f"ATRI_{setting.upper()}"
    return InvalidInput(
        f"{field}: {what.format(found)}; the limit is {maximum:,} ({env})",
        {"field": field, "limit": env, "max": maximum, "found": found, **where},
    )


def parse_captions(text: str, settings: Settings) -> dict[str, list[str]]:
    """The `captions` form field: manifest-format JSON, language -> parallel captions,
    within the limits of `settings`. Language names are canonicalised; lists must be
    equally long (manifest.md); `{}` is an audio-only clip."""
    try:
        raw = _captions.validate_json(text)
    except ValidationError as exc:
        raise InvalidInput(f"captions: {_first_error(exc)}", {"field": "captions"}) from exc
    if len(raw) > settings.max_caption_languages:
        raise over_limit(
            "captions", "{:,} languages", len(raw), "max_caption_languages",
            maximum=settings.max_caption_languages,
        )  # fmt: skip
    captions: dict[str, list[str]] = {}
    for tag, texts in raw.items():
        lang = resolve(tag)
        if lang in captions:
            raise InvalidInput(f"captions: language {lang} is given twice", {"field": "captions"})
        captions[lang] = texts
    for lang, texts in captions.items():
        check_captions(lang, texts, settings)
    counts = {lang: len(texts) for lang, texts in captions.items()}
    if len(set(counts.values())) > 1:
        raise InvalidInput(
            f"captions: unequal caption counts across languages {counts} (lists are parallel)",
            {"field": "captions", "counts": counts},
        )
    return captions


def check_captions(lang: str, texts: list[str], settings: Settings) -> None:
    if len(texts) > settings.max_captions_per_language:
        raise over_limit(
            "captions", f"{lang} has {{:,}} captions", len(texts), "max_captions_per_language",
            maximum=settings.max_captions_per_language, lang=lang,
        )  # fmt: skip
    for j, caption in enumerate(texts):
        if len(caption) > settings.max_caption_chars:
            raise over_limit(
                "captions", f"{lang}[{j}] has {{:,}} characters", len(caption),
                "max_caption_chars", maximum=settings.max_caption_chars, lang=lang, index=j,
            )  # fmt: skip


def parse_meta(text: str | None, settings: Settings) -> dict[str, str | int | float | bool]:
    if text is None or not text.strip():
        return {}
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > settings.max_meta_bytes:
        raise over_limit(
            "meta", "{:,} bytes", size, "max_meta_bytes", maximum=settings.max_meta_bytes
        )
    try:
        return _meta.validate_json(text)
    except ValidationError as exc:
        raise InvalidInput(f"meta: {_first_error(exc)}", {"field": "meta"}) from exc


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where + ': ' if where else ''}{first['msg']}"


@router.post(
    "/clips",
    status_code=201,
    response_model=ClipOut,
    responses=errors(401, 403, 404, 409, 413, 415, 422, 503),
)
def add_clip(
    _: AdminDep,
    engine: EngineDep,
    settings: SettingsDep,
    response: Response,
    file: Annotated[UploadFile, File(description="the clip's audio")],
    captions: Annotated[
        str,
        Form(
            description='JSON, manifest format: {"eng": ["..."], ...}; {} adds an audio-only '
            "clip (found by its audio, as a folder indexed with --audio-dir)"
        ),
    ],
    id: Annotated[str | None, Form(description="clip id; default: from the audio's hash")] = None,
    meta: Annotated[str | None, Form(description="JSON object of attributes")] = None,
) -> ClipOut:
    """Admin: embed the clip and its captions and add them to the live index."""
    caption_map = parse_captions(captions, settings)
    meta_map = parse_meta(meta, settings)
    data = file.file.read()
    clip_id = id.strip() if id and id.strip() else "up-" + hashlib.sha256(data).hexdigest()[:16]
    if len(clip_id) > settings.max_id_chars:
        raise over_limit("id", "{:,} characters", len(clip_id), "max_id_chars",
                         maximum=settings.max_id_chars)  # fmt: skip
    if not ID_PATTERN.fullmatch(clip_id):
        raise InvalidInput(
            f"id {clip_id!r} must match {ID_PATTERN.pattern}", {"field": "id", "id": clip_id}
        )
    with engine.changes():
        if engine.records([clip_id]):
            raise ClipAlreadyExists(clip_id)
        with engine.heavy():
            decoded = decode_upload(
                data,
                engine.sample_rate,
                duration_limits(settings),
                name=file.filename or clip_id,
                timeout_s=settings.request_timeout_s,
            )
            audio_vec = engine.embed_audio(decoded.wave)
            caption_vecs = {lang: engine.embed_texts(t, lang) for lang, t in caption_map.items()}
        path = save_flac(engine.upload_dir / f"{clip_id}.flac", decoded.wave, decoded.sample_rate)
        record = ClipRecord(id=clip_id, audio=str(path), captions=caption_map, meta=meta_map)
        try:
            engine.add_clip(record, audio_vec, caption_vecs)
        except BaseException:
            discard_upload(engine, record)  # no audio without its clip
            raise
    log.info("added clip %s (%.1f s, %d languages)", clip_id, decoded.duration_s, len(caption_map))
    response.headers["Location"] = f"/clips/{clip_id}"
    return clip_out(record)


@router.delete("/clips/{clip_id}", status_code=204, responses=errors(401, 403, 404, 503))
def delete_clip(_: AdminDep, clip_id: str, engine: EngineDep) -> Response:
    """Admin: remove the clip and its captions from the live index."""
    with engine.changes():
        record = engine.delete_clip(clip_id)
        remove_upload(engine, record)
    log.info("deleted clip %s", clip_id)
    return Response(status_code=204)


def discard_upload(engine: Engine, record: ClipRecord) -> None:
    """The stored audio of an add that failed, unless a live clip uses that file."""
    served = engine.records([record.id]).get(record.id)
    if served is None or served.audio != record.audio:
        Path(record.audio).unlink(missing_ok=True)


def remove_upload(engine: Engine, record: ClipRecord) -> None:
    """Audio that POST /clips stored goes with its clip; corpus audio stays."""
    path = engine.upload_dir / f"{record.id}.flac"
    if record.audio == str(path):
        path.unlink(missing_ok=True)
