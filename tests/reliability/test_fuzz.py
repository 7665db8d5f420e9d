"""Schemathesis against a real `atri serve` (uvicorn on a loopback port), driven by the
service's own /openapi.json: every operation, admin ones with and without the token,
with schema-valid (positive) and schema-breaking (negative) requests. No answer may be a
5xx, and every answer must match the document: a documented status, content type,
headers and body schema; negative requests must be refused with a 4xx.

The short run (>= 500 cases) is part of the default tests; the long one (>= 10,000) is
marked `fuzz`:

    .venv/bin/pytest tests/reliability/test_fuzz.py -m fuzz
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import uvicorn
from error_leaks import leaks
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from harness import wait_until
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CHECKS = {
    GenerationMode.POSITIVE: CONFORMANCE,
    GenerationMode.NEGATIVE: [*CONFORMANCE, negative_data_rejection],
}
ADMIN = {("POST", "/clips"), ("DELETE", "/clips/{clip_id}")}
# Schema-breaking requests the service reads leniently on purpose, as FastAPI and pydantic
# do: these are counted, not failed (docs/reliability.md). Anything else accepted fails.
LENIENT = {
    "json-bool-as-int": ("in body - violates `type`", "was integer, became boolean"),
    "repeated-query-param": ("in query - violates `type`", "became array"),
}
REQUEST_TIMEOUT_S = 60


@dataclass
class FuzzReport:
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    per_operation: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lenient: Counter = field(default_factory=Counter)  # accepted on purpose, see LENIENT
    operations: int = 0  # in the OpenAPI document

    def summary(self) -> str:
        head = (
            f"{self.cases} cases, statuses {dict(sorted(self.statuses.items()))}, "
            f"lenient {dict(self.lenient)}"
        )
        return "\n\n".join([head, *self.failures[:10]])


def fuzz(
    url: str, token: str | None, budget: int, base_seed: int = 0, known_id: str | None = None
) -> FuzzReport:
    """At least `budget` generated requests spread over every operation, mode and (for
    admin operations) token; each answer checked. Seeded (schemathesis also steers by
    earlier answers, so a rerun may differ in a few cases).

    Random `lang` values and ids are refused early (422, 404), so some positive cases
    also fix them to real ones (`eng`, `known_id`): the random rest then reaches the
    model and the index."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    deeper = {("GET", "/search"): {"query": {"lang": "eng"}}}
    if known_id is not None:
        deeper[("GET", "/search/similar")] = {"query": {"id": known_id, "lang": "eng"}}
    combos: list[Combo] = []
    for op in operations:
        key = (op.method.upper(), op.path)
        admin = token is not None and key in ADMIN
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for auth in [f"Bearer {token}", None] if admin else [None]:
                combos.append(Combo(op, mode, {"authorization": auth} if auth else {}, {}))
        if key in deeper:
            combos.append(Combo(op, GenerationMode.POSITIVE, {}, deeper[key]))
    report = FuzzReport(operations=len(operations))
    session = requests.Session()
    for round_ in range(20):
        # an operation without inputs (GET /health) exhausts after a case or two, and
        # path parameters cannot be negated: later rounds, with new seeds, fill the
        # budget from the others
        per_combo = math.ceil((budget - report.cases) / len(combos))
        exhausted = []
        for i, combo in enumerate(combos):
            made = run_combo(report, session, combo, per_combo, base_seed + 1000 * round_ + i)
            if made < per_combo // 2:
                exhausted.append(combo)
        combos = [c for c in combos if c not in exhausted]
        if report.cases >= budget or not combos:
            break
    return report


@dataclass(frozen=True, eq=False)
class Combo:
    """One operation in one generation mode, with some parts fixed."""

    op: Any
    mode: GenerationMode
    headers: dict[str, str]
    fixed: dict[str, dict[str, str]]  # as_strategy's query= / path_parameters=

    @property
    def label(self) -> str:
        extra = " +token" if self.headers else ""
        extra += "".join(f" {k}={v}" for part in self.fixed.values() for k, v in part.items())
        return f"{self.op.method.upper()} {self.op.path} {self.mode.value}{extra}"


def run_combo(
    report: FuzzReport, session: requests.Session, combo: Combo, n: int, case_seed: int
) -> int:
    """Up to n cases of one combination; returns how many were sent."""
    label = combo.label
    strategy = combo.op.as_strategy(
        generation_mode=combo.mode, headers=combo.headers or None, **combo.fixed
    )
    before = report.cases

    @seed(case_seed)
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case) -> None:
        try:
            response = case.call(session=session, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            report.failures.append(f"{label}: no answer: {exc}\n{case.as_curl_command()}")
            return
        report.cases += 1
        report.statuses[response.status_code] += 1
        report.per_operation[label] += 1
        if response.status_code >= 400 and (shown := leaks(response.text)):
            report.failures.append(f"{label}: the error body shows {shown}: {response.text}")
        try:
            case.validate_response(response, checks=CHECKS[combo.mode])
        except FailureGroup as exc:
            kinds = [lenient_kind(failure) for failure in exc.exceptions]
            if all(kinds):
                report.lenient.update(kinds)
            else:
                report.failures.append(f"{label}: {exc}")

    try:
        run()
    except Unsatisfiable:  # nothing to negate (a path parameter of any string)
        pass
    return report.cases - before


def lenient_kind(failure: Exception) -> str | None:
    """The LENIENT entry an accepted schema-breaking request falls under, if any."""
    if not isinstance(failure, AcceptedNegativeData):
        return None
    for kind, needles in LENIENT.items():
        if all(needle in failure.message for needle in needles):
            return kind
    return None


def assert_clean(report: FuzzReport, budget: int) -> None:
    assert not report.failures, report.summary()
    assert report.cases >= budget, report.summary()
    assert not any(status >= 500 for status in report.statuses), report.summary()


def assert_still_serves(url: str, clip_ids: list[str]) -> None:
    health = httpx.get(f"{url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["index_size"] == len(clip_ids), health
    hits = httpx.get(f"{url}/search", params={"q": "a piano", "lang": "eng", "k": 3}, timeout=30)
    assert hits.status_code == 200 and len(hits.json()["results"]) == 3


def test_fuzz_short(reliability_server, admin_headers, clip_ids) -> None:
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    report = fuzz(reliability_server.url, token, budget=500, known_id=clip_ids[0])
    print(report.summary())
    assert_clean(report, 500)
    reached = {" ".join(label.split()[:2]) for label in report.per_operation}
    assert len(reached) == report.operations >= 12, report.per_operation  # every operation
    assert_still_serves(reliability_server.url, clip_ids)


@pytest.mark.fuzz
def test_fuzz_long(reliability_server, admin_headers, clip_ids) -> None:
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    report = fuzz(reliability_server.url, token, budget=10_000, base_seed=1, known_id=clip_ids[0])
    print(report.summary())
    assert_clean(report, 10_000)
    assert_still_serves(reliability_server.url, clip_ids)


@pytest.mark.parametrize(
    ("path", "body"),
    [("/search", {"q": "a flute \ud800", "lang": "eng"}),
     ("/consistency", {"queries": {"eng": "a flute", "fra": "\udfff"}, "k": 3})],
)  # fmt: skip
def test_lone_surrogates_in_json_are_a_422(reliability_server, path, body) -> None:
    """Found by hand next to the fuzzer: JSON may escape a lone UTF-16 surrogate, which
    Python's parser accepts but no text encoder can encode (it was a 500)."""
    raw = json.dumps(body)  # ASCII JSON: the surrogate travels as a \\udXXX escape
    response = httpx.post(
        f"{reliability_server.url}{path}",
        content=raw,
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


@contextmanager
def planted_server() -> Iterator[str]:
    """A two-route app with known faults on a loopback port: the fuzzer must report them."""
    app = FastAPI()

    @app.get("/boom")
    def boom(k: int = 1) -> dict[str, int]:
        if k > 5:
            raise RuntimeError("planted fault")
        return {"k": k}

    @app.get("/teapot", responses={200: {"model": dict[str, int]}})
    def teapot() -> JSONResponse:
        return JSONResponse({"not": "documented"}, status_code=418)

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    def started() -> bool:
        assert thread.is_alive(), "the planted server stopped before it started"
        return server.started

    wait_until(started, "the planted server to start", 30)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_fuzzer_reports_planted_faults() -> None:
    with planted_server() as url:
        report = fuzz(url, None, budget=40)
    text = "\n".join(report.failures)
    assert report.statuses[500] > 0 and "Server error" in text, report.summary()
    assert "Undocumented status code" in text and "Received: 418" in text, report.summary()
