"""Clip records (GET /clips/{id}) and the admin endpoints that change the live index:
POST /clips adds a clip with its captions, DELETE /clips/{id} removes one. Both are
durable once answered."""

from __future__ import annotations

import hashlib
import logging
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


def parse_captions(text: str) -> dict[str, list[str]]:
    """The `captions` form field: manifest-format JSON, language -> parallel captions.
    Language names are canonicalised; lists must be equally long (manifest.md)."""
    try:
        raw = _captions.validate_json(text)
    except ValidationError as exc:
        raise InvalidInput(f"captions: {_first_error(exc)}", {"field": "captions"}) from exc
    captions: dict[str, list[str]] = {}
    for tag, texts in raw.items():
        lang = resolve(tag)
        if lang in captions:
            raise InvalidInput(f"captions: language {lang} is given twice", {"field": "captions"})
        captions[lang] = texts
    counts = {lang: len(texts) for lang, texts in captions.items()}
    if len(set(counts.values())) > 1:
        raise InvalidInput(
            f"captions: unequal caption counts across languages {counts} (lists are parallel)",
            {"field": "captions", "counts": counts},
        )
    return captions


def parse_meta(text: str | None) -> dict[str, str | int | float | bool]:
    if text is None or not text.strip():
        return {}
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
    captions: Annotated[str, Form(description='JSON, manifest format: {"eng": ["..."], ...}')],
    id: Annotated[str | None, Form(description="clip id; default: from the audio's hash")] = None,
    meta: Annotated[str | None, Form(description="JSON object of attributes")] = None,
) -> ClipOut:
    """Admin: embed the clip and its captions and add them to the live index."""
    caption_map = parse_captions(captions)
    meta_map = parse_meta(meta)
    data = file.file.read()
    clip_id = id.strip() if id and id.strip() else "up-" + hashlib.sha256(data).hexdigest()[:16]
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
        engine.add_clip(record, audio_vec, caption_vecs)
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


def remove_upload(engine: Engine, record: ClipRecord) -> None:
    """Audio that POST /clips stored goes with its clip; corpus audio stays."""
    path = engine.upload_dir / f"{record.id}.flac"
    if record.audio == str(path):
        path.unlink(missing_ok=True)
