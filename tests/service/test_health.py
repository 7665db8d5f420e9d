"""/health, /metrics, the page at /, OpenAPI, CORS, settings, and the identity check that
refuses an index built with another model."""

from __future__ import annotations

import json
import logging

import pytest

from atri.service.loading import StartupError, identity_mismatch, load_engine
from atri.service.settings import Settings, get_settings
from atri.training.languages import LANGS


def test_health_when_ready(client, clip_ids, records) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["index_size"] == len(clip_ids)
    distinct = {(lang, t) for r in records.values() for lang, ts in r.captions.items() for t in ts}
    assert body["captions_indexed"] == len(distinct)
    assert "aisfx" in body["model"] and "e5-small" in body["model"]
    assert body["languages"] == list(LANGS)


def test_metrics_count_requests_per_endpoint(client, clip_ids) -> None:
    for _ in range(3):
        client.get("/search", params={"q": "piano", "lang": "eng"})
    client.get(f"/audio/{clip_ids[0]}")
    client.get("/no/such/thing")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    line = next(
        ln for ln in text.splitlines()
        if ln.startswith("atri_http_requests_total{")
        and 'endpoint="/search"' in ln and 'status="200"' in ln and 'method="GET"' in ln
    )  # fmt: skip
    assert float(line.rsplit(" ", 1)[1]) >= 3
    assert 'endpoint="/audio/{clip_id}"' in text  # the route template, not the path
    assert 'endpoint="unmatched"' in text
    assert "atri_http_request_duration_seconds_bucket" in text
    assert f"atri_index_clips {float(len(clip_ids))}" in text
    assert "atri_ready 1.0" in text


def test_page_and_static_files(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text and "/static/style.css" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
    assert "cdn" not in page.text.lower()  # no third-party assets


def test_openapi_documents_the_endpoints(client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/health", "get"), ("/languages", "get"), ("/search", "get"), ("/search", "post"),
        ("/search/similar", "get"), ("/search/audio", "post"), ("/consistency", "post"),
        ("/audio/{clip_id}", "get"), ("/clips/{clip_id}", "get"), ("/clips", "post"),
        ("/clips/{clip_id}", "delete"), ("/metrics", "get"),
    ]:  # fmt: skip
        assert method in paths[path], (path, method)
    assert "ErrorResponse" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_cors_is_off_by_default(client) -> None:
    response = client.get("/languages", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in response.headers


def test_cors_when_configured(index_dir, make_client, make_settings) -> None:
    settings = make_settings(index_dir, cors_origins=["https://app.example"])
    with make_client(settings) as c:
        ok = c.get("/languages", headers={"Origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get("/languages", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = c.options(
            "/search",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200


def test_settings_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ATRI_INDEX_DIR", str(tmp_path))
    monkeypatch.setenv("ATRI_PORT", "9001")
    monkeypatch.setenv("ATRI_ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("ATRI_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("ATRI_AUDIO_DIRS", json.dumps([str(tmp_path / "a"), str(tmp_path / "b")]))
    monkeypatch.setenv("ATRI_FALLBACK_LANG", "jpn")
    monkeypatch.setenv("ATRI_MAX_UPLOAD_BYTES", "1000")
    settings = Settings()
    assert settings.index_dir == tmp_path and settings.port == 9001
    assert settings.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.audio_dirs == [tmp_path / "a", tmp_path / "b"]
    assert settings.fallback_lang == "jpn" and settings.max_upload_bytes == 1000
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
        assert get_settings().port == 9001
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("name", "value"),
    [("ATRI_FALLBACK_LANG", "en"), ("ATRI_PORT", "70000"), ("ATRI_LOG_FORMAT", "xml"),
     ("ATRI_MAX_UPLOAD_BYTES", "-1"), ("ATRI_MAX_WAITING_REQUESTS", "31")],
)  # fmt: skip
def test_bad_settings_are_rejected(monkeypatch, name, value) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_defaults_of_api_md() -> None:
    settings = Settings(_env_file=None)
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert settings.max_duration_s == 600 and settings.min_duration_s == 0.1
    assert settings.admin_token is None and settings.cors_origins == []
    assert settings.port == 8000


def test_identity_mismatch_names_every_difference() -> None:
    built = {"audio_backbone": "aisfx", "text_encoder": "e5-small", "text_encoder_version": "1"}
    loaded = {**built, "text_encoder_version": "2"}
    problems = identity_mismatch(built, loaded, {}, {})
    assert problems == ["text_encoder_version: index '1', model '2'"]
    ckpt = {"path": "/c", "info": {"weights_sha256": "aaa"}}
    assert identity_mismatch(built, built, ckpt, {"weights_sha256": "aaa"}) == []
    problems = identity_mismatch(built, built, ckpt, {"weights_sha256": "bbb"})
    assert problems == ["checkpoint weights_sha256: index 'aaa', model 'bbb'"]


def test_an_index_of_another_model_is_refused(index_dir, other_checkpoint_dir) -> None:
    settings = Settings(index_dir=index_dir, checkpoint=str(other_checkpoint_dir))
    with pytest.raises(StartupError, match="another model") as info:
        load_engine(settings)
    assert "weights_sha256" in str(info.value)


def test_json_logs(caplog) -> None:
    from atri.service.logs import JsonFormatter

    record = logging.LogRecord("atri.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.fields = {"path": "/search", "status": 200}
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello you" and line["level"] == "info"
    assert line["path"] == "/search" and line["status"] == 200 and "time" in line
