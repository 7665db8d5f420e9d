"""A clip's audio file (GET /audio/{id}), with its content type and HTTP range requests
(audio players seek with them; Starlette's FileResponse answers Range with 206/416).
Only files below the configured audio directories are served, whatever a record says."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

from atri.service.deps import EngineDep
from atri.service.errors import NotFound, error_body
from atri.service.routes.common import errors

log = logging.getLogger(__name__)
router = APIRouter(tags=["clips"])

AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
    ".webm": "audio/webm",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
}


RANGE_ERRORS = {
    400: ("invalid_range", "malformed Range header"),
    416: ("range_not_satisfiable", "the requested range lies outside the file"),
}


class AudioFileResponse(FileResponse):
    """A FileResponse whose own range errors (400 malformed, 416 unsatisfiable), which
    Starlette answers in plain text, carry the uniform error body instead."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        replaced = False

        async def uniform_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the plain-text body of the replaced answer
            if message["type"] == "http.response.start" and message["status"] in RANGE_ERRORS:
                replaced = True
                status = message["status"]
                code, text = RANGE_ERRORS[status]
                size = Path(self.path).stat().st_size
                body = json.dumps(error_body(code, text, {"size": size})).encode()
                headers = [(k, v) for k, v in message["headers"] if k == b"content-range"]
                headers += [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await super().__call__(scope, receive, uniform_send)


def allowed(path: Path, roots: list[Path]) -> bool:
    """`path`, symlinks resolved, lies below one of `roots` (already resolved)."""
    real = path.resolve()
    return any(real.is_relative_to(root) for root in roots)


@router.get(
    "/audio/{clip_id}",
    response_class=AudioFileResponse,
    responses={
        200: {"content": {t: {} for t in sorted(set(AUDIO_TYPES.values()))}},
        206: {"description": "the requested byte range"},
        **errors(404, 503),
    },
)
def get_audio(clip_id: str, engine: EngineDep) -> AudioFileResponse:
    """The clip's audio file. Send `Range: bytes=a-b` for a part (206)."""
    record = engine.record(clip_id)
    path = Path(record.audio)
    if not allowed(path, engine.audio_dirs):
        log.warning("clip %s: audio %s lies outside the served audio dirs", clip_id, path)
        raise NotFound(f"the audio of clip {clip_id!r} is not served", {"id": clip_id})
    if not path.is_file():
        raise NotFound(f"the audio file of clip {clip_id!r} is missing", {"id": clip_id})
    media_type = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return AudioFileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})
