"""Typed service errors and the one handler that turns every error, ours and FastAPI's own
404/405/422, into `{"error": {"code", "message", "details"}}` (shared spec api.md).

A caller's mistake is a 4xx, never a 5xx. Errors subclass Starlette's HTTPException so
that one raised while FastAPI reads a request body (the upload size limit) passes through
unchanged instead of becoming a generic 400."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from atri.training.data.audio_io import AudioDecodeError

log = logging.getLogger(__name__)


class ServiceError(StarletteHTTPException):
    """A caller's error with its HTTP status and error code. Each subclass states both in
    its header, `class NotFound(ServiceError, status=404, code="not_found")`, so the
    table of statuses reads down the class lines."""

    status: int = 400
    code: str = "bad_request"

    def __init_subclass__(cls, *, status: int, code: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status, cls.code = status, code

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=self.status, detail=message, headers=headers)
        self.message = message
        self.details = details or {}


class UnsupportedLanguage(ServiceError, status=422, code="unsupported_language"):
    def __init__(self, lang: str, supported: list[str]) -> None:
        super().__init__(
            f"unsupported language {lang!r}; supported: {', '.join(supported)} "
            "(or their ISO 639-1, 639-2/B, NLLB or BCP-47 names)",
            {"lang": lang, "supported": supported},
        )


class InvalidInput(ServiceError, status=422, code="invalid_input"):
    """A well-formed request whose content is wrong (bad clip id, captions, meta)."""


class PayloadTooLarge(ServiceError, status=413, code="payload_too_large"):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes", {"limit_bytes": limit})


class UnsupportedAudio(ServiceError, status=415, code="unsupported_audio"):
    """No decoder could read the upload; the message carries the decoders' reasons."""


class InvalidAudio(ServiceError, status=422, code="invalid_audio"):
    """Decodable, but empty, too short or too long."""


class ClipNotFound(ServiceError, status=404, code="clip_not_found"):
    def __init__(self, clip_id: str, what: str = "clip") -> None:
        super().__init__(f"no {what} with id {clip_id!r}", {"id": clip_id})


class ClipAlreadyExists(ServiceError, status=409, code="clip_exists"):
    def __init__(self, clip_id: str) -> None:
        super().__init__(f"a clip with id {clip_id!r} is already indexed", {"id": clip_id})


class Unauthorized(ServiceError, status=401, code="unauthorized"):
    def __init__(self, message: str = "this endpoint needs an admin bearer token") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError, status=403, code="forbidden"):
    """A bearer token was given, but not the admin token."""


class NotFound(ServiceError, status=404, code="not_found"):
    """Something other than a clip is not there: an admin endpoint with no token
    configured, or a clip's audio file that is missing or not served."""


class NotReady(ServiceError, status=503, code="not_ready"):
    def __init__(self, message: str = "the model and index are still loading") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class LoadFailed(ServiceError, status=503, code="load_failed"):
    """The model or the index failed to load; the message says why."""


class Busy(ServiceError, status=503, code="busy"):
    """No slot within `waited_s`, or (`waiting` given) refused at once because that many
    requests already wait for one."""

    def __init__(self, waited_s: float, waiting: int | None = None) -> None:
        if waiting is None:
            message = f"the service is busy: no slot became free within {waited_s:g} s"
            details: dict[str, Any] = {"waited_s": waited_s}
        else:
            message = f"the service is busy: {waiting} requests already wait for a slot"
            details = {"waited_s": waited_s, "waiting": waiting}
        super().__init__(message, details, headers={"Retry-After": "2"})


class IndexChangedError(ServiceError, status=503, code="index_changed"):
    """The index directory was republished (a rebuild or a compaction by another
    process) and the service has not switched to the new version yet, or cannot."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "2"})


class IndexBusyError(ServiceError, status=503, code="index_busy"):
    """Another process holds the index lock while it publishes a new version."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


# What an error body must not show a caller: Python object reprs with their addresses
# (libsndfile names a BytesIO by its repr) and paths on the server (an index, a temp
# file, the installation): such a path is cut to its last part, the file's name.
OBJECT_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>")
PATH_TAIL = r"(?:/[\w.@+-]+)*"


def without_object_reprs(text: str, name: str) -> str:
    return OBJECT_REPR.sub(name, text)


@lru_cache(maxsize=64)
def _server_paths(roots: tuple[str, ...]) -> re.Pattern[str]:
    """A pattern of any path below one of `roots` (longest first, so that the most
    specific root matches)."""
    ordered = sorted({r.rstrip("/") for r in roots if r and r != "/"}, key=len, reverse=True)
    return re.compile("(?:" + "|".join(re.escape(r) for r in ordered) + ")" + PATH_TAIL)


def server_roots(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Folders of this server whose paths an error must not reveal."""
    here = Path(__file__).resolve().parents[1]
    common = (tempfile.gettempdir(), sys.prefix, sys.base_prefix, os.getcwd(), str(here))
    home = os.path.expanduser("~")
    return (*common, *((home,) if home != "/" else ()), *extra)


def public_text(text: str, roots: tuple[str, ...] | None = None) -> str:
    """`text` fit for an error body: object reprs become "<object>", paths below the
    server's folders (`server_roots`) their last part."""
    text = OBJECT_REPR.sub("<object>", text)
    pattern = _server_paths(roots if roots is not None else server_roots())
    return pattern.sub(lambda m: Path(m.group(0)).name or "<path>", text)


def _public(value: Any, roots: tuple[str, ...] | None) -> Any:
    if isinstance(value, str):
        return public_text(value, roots)
    if isinstance(value, dict):
        return {key: _public(item, roots) for key, item in value.items()}
    if isinstance(value, list):
        return [_public(item, roots) for item in value]
    return value


def error_body(
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    roots: tuple[str, ...] | None = None,
) -> dict:
    """The uniform body; `roots`: server folders whose paths are cut (`public_text`)."""
    return {
        "error": {
            "code": code,
            "message": public_text(message, roots),
            "details": _public(details or {}, roots),
        }
    }


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
MAX_ERRORS = 20  # validation errors listed in details (a body may hold thousands)


Described = tuple[int, str, str, dict[str, Any], Mapping[str, str] | None]


def _describe(exc: Exception) -> Described:
    """(status, code, message, details, headers) of any error reaching the handler."""
    if isinstance(exc, ServiceError):
        return exc.status, exc.code, exc.message, exc.details, exc.headers
    if isinstance(exc, RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        details = {"errors": errors[:MAX_ERRORS], "n_errors": len(errors)}
        return 422, "validation_error", f"{where}: {first['msg']}", details, None
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 400:
        # FastAPI's and Starlette's body readers: JSON they cannot parse (nested too deep)
        # or a malformed multipart body -- bad input like any other, so the same 422.
        reason = exc.detail if isinstance(exc.detail, str) else "malformed request body"
        errors = [{"loc": ["body"], "msg": reason, "type": "body_parsing"}]
        return 422, "validation_error", f"body: {reason}", {"errors": errors, "n_errors": 1}, None
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        code = _HTTP_CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        return status, code, message, {}, exc.headers
    if isinstance(exc, AudioDecodeError):  # a decoder error that escaped upload.py
        return 415, UnsupportedAudio.code, str(exc), {}, None
    log.exception("unhandled error", exc_info=exc)
    return 500, "internal_error", "internal server error", {}, None


def _served_folders(request: Request) -> tuple[str, ...]:
    """The index's and the corpus's folders, as configured and as loaded."""
    state = request.app.state
    settings = getattr(state, "settings", None)
    engine = getattr(getattr(state, "load_state", None), "engine", None)
    folders = [
        *((settings.index_dir, *settings.audio_dirs) if settings is not None else ()),
        *(engine.audio_dirs if engine is not None else ()),
    ]
    return tuple(str(Path(p).resolve()) for p in folders if p is not None)


def public_text_for(request: Request, text: str) -> str:
    """`public_text` with the folders this app serves from among the server's."""
    return public_text(text, server_roots(_served_folders(request)))


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one handler: every error becomes the uniform body with its status."""
    status, code, message, details, headers = _describe(exc)
    if status >= 500 and status != 503:
        log.error("%s %s -> %d %s", request.method, request.url.path, status, code)
    roots = server_roots(_served_folders(request))
    body = error_body(code, message, details, roots)
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handler(app: FastAPI) -> None:
    for exc_type in (
        ServiceError,
        RequestValidationError,
        StarletteHTTPException,
        AudioDecodeError,
        Exception,
    ):
        app.add_exception_handler(exc_type, handle_error)
