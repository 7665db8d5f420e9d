"""The uniform error body for every error: ours, FastAPI's own 404/405/422, 503 while
loading, and 500 for a fault of the service (never for a caller's mistake)."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from atri.service.app import create_app
from atri.service.deps import engine as engine_dependency
from atri.service.settings import Settings
from atri.training.languages import LANGS


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


# --- FastAPI's own errors, wrapped ---------------------------------------------------------


def test_unknown_route_is_a_uniform_404(client) -> None:
    assert_error(client.get("/no/such/route"), 404, "not_found")


def test_wrong_method_is_a_uniform_405(client) -> None:
    assert_error(client.put("/search"), 405, "method_not_allowed")
    assert_error(client.delete("/health"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "params", [{"q": "flute", "k": 0}, {"q": "flute", "k": 101}, {"q": "flute", "k": "ten"},
               {"k": 5}, {"q": "flute", "offset": -1}]
)  # fmt: skip
def test_bad_query_parameters_are_a_uniform_422(client, params) -> None:
    error = assert_error(client.get("/search", params=params), 422, "validation_error")
    assert error["details"]["errors"], error


def test_bad_json_is_a_uniform_422(client) -> None:
    response = client.post(
        "/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "validation_error")


def test_unknown_body_field_is_a_422(client) -> None:
    assert_error(client.post("/search", json={"query": "flute"}), 422, "validation_error")


# --- the caller's mistakes of api.md ---------------------------------------------------


@pytest.mark.parametrize("q", ["", "   ", "\t\n", "\u3000"])  # ideographic space: NFKC -> " "
def test_empty_or_whitespace_query_is_422(client, q: str) -> None:
    assert_error(client.get("/search", params={"q": q, "lang": "eng"}), 422, "validation_error")
    assert_error(client.post("/search", json={"q": q, "lang": "eng"}), 422, "validation_error")


def test_query_over_1000_characters_is_422(client) -> None:
    error = assert_error(
        client.post("/search", json={"q": "a" * 1001, "lang": "eng"}), 422, "validation_error"
    )
    assert "1000" in error["message"]
    assert client.post("/search", json={"q": "a" * 1000, "lang": "eng"}).status_code == 200


@pytest.mark.parametrize("lang", ["xx", "pt", "english", "eng_Jpan"])
def test_unknown_language_is_422_listing_the_supported(client, lang: str) -> None:
    error = assert_error(
        client.get("/search", params={"q": "flute", "lang": lang}), 422, "unsupported_language"
    )
    assert error["details"]["supported"] == list(LANGS)
    assert error["details"]["lang"] == lang


def test_unknown_language_on_every_endpoint_that_takes_one(client, clip_ids, make_audio) -> None:
    assert_error(client.post("/search", json={"q": "x", "lang": "xx"}), 422,
                 "unsupported_language")  # fmt: skip
    assert_error(
        client.get("/search/similar", params={"id": clip_ids[0], "lang": "xx"}),
        422,
        "unsupported_language",
    )
    assert_error(
        client.post(
            "/search/audio", files={"file": ("a.wav", make_audio(1.0))}, data={"lang": "xx"}
        ),
        422,
        "unsupported_language",
    )
    assert_error(
        client.post("/consistency", json={"queries": {"xx": "flute"}}), 422, "unsupported_language"
    )


def test_unknown_clip_is_404(client) -> None:
    for path in ("/clips/nope", "/audio/nope", "/search/similar?id=nope"):
        error = assert_error(client.get(path), 404, "clip_not_found")
        assert error["details"]["id"] == "nope"


# --- not ready: 503 ---------------------------------------------------------------------


@pytest.fixture
def loading_client():
    """An app whose loader blocks until the test releases it."""
    release = threading.Event()

    def load(settings):
        release.wait(30)
        raise RuntimeError("released")

    app = create_app(Settings(), load=load)
    with TestClient(app) as client:
        yield client
    release.set()


SEARCH_CALLS = [
    ("get", "/search", {"params": {"q": "flute", "lang": "eng"}}),
    ("post", "/search", {"json": {"q": "flute"}}),
    ("get", "/search/similar", {"params": {"id": "x"}}),
    ("post", "/search/audio", {"files": {"file": ("a.wav", b"RIFF")}}),
    ("post", "/consistency", {"json": {"clip_id": "x"}}),
    ("get", "/clips/x", {}),
    ("get", "/audio/x", {}),
]


def test_everything_needing_the_index_is_503_while_loading(loading_client) -> None:
    health = loading_client.get("/health")
    assert health.status_code == 503
    assert health.json() == {"status": "loading"}
    for method, path, kwargs in SEARCH_CALLS:
        response = getattr(loading_client, method)(path, **kwargs)
        assert_error(response, 503, "not_ready")
        assert response.headers["retry-after"]
    # what needs no index answers at once
    assert loading_client.get("/languages").status_code == 200
    assert loading_client.get("/metrics").status_code == 200
    assert loading_client.get("/").status_code == 200


def test_a_failed_load_is_reported() -> None:
    def load(settings):
        raise RuntimeError("index built with another model")

    app = create_app(Settings(), load=load)
    with TestClient(app) as client:
        state = app.state.load_state
        assert state.done.wait(10)
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "failed", "error": "index built with another model"}
        error = assert_error(client.get("/search", params={"q": "x"}), 503, "load_failed")
        assert "another model" in error["message"]


def test_no_index_configured_fails_with_a_clear_reason() -> None:
    app = create_app(Settings(index_dir=None))
    with TestClient(app) as client:
        assert app.state.load_state.done.wait(30)
        body = client.get("/health").json()
        assert body["status"] == "failed"
        assert "ATRI_INDEX_DIR" in body["error"]


# --- a fault of the service: 500, same body ---------------------------------------------


def test_internal_error_is_a_uniform_500(index_dir, make_settings) -> None:
    class Broken:
        def embed_texts(self, *args, **kwargs):
            raise RuntimeError("boom")

    app = create_app(make_settings(index_dir))
    app.dependency_overrides[engine_dependency] = Broken
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/search", params={"q": "flute", "lang": "eng"})
        error = assert_error(response, 500, "internal_error")
        assert "boom" not in error["message"]  # no internals leak to the caller
        # the real load runs on in its thread: let it end here, not during the next
        # module's load (torch.serialization.safe_globals is process-wide, not per thread)
        assert app.state.load_state.done.wait(120)


def test_heavy_requests_beyond_the_limit_are_503_busy() -> None:
    from atri.service.engine import Engine
    from atri.service.errors import Busy

    engine = Engine(
        model=None, store=None, name="x", audio_dirs=[], upload_dir=None, max_heavy=1, wait_s=0.05
    )
    with engine.heavy():
        with pytest.raises(Busy) as info:
            with engine.heavy():
                pass
    assert info.value.status == 503 and info.value.headers["Retry-After"]
    with engine.heavy():  # the slot is free again
        pass
