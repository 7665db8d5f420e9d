"""docker-compose.yml: valid against the Compose Specification's JSON schema (the copy
check-jsonschema vendors), images and builds that agree with the Dockerfile, named and
owned volumes, job order and profiles, the api's port and settings, and every variable
documented in docs/deploy.md."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parents[2]
DEPLOY_DOC = REPO / "docs" / "deploy.md"
SERVICE_PORT = 8000


def compose_schema() -> dict[str, Any]:
    # check-jsonschema (dev extra) vendors the Compose Specification's schema
    # (compose-spec/compose-spec, Apache-2.0; licence beside it in the package).
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    out = []
    for spec in service.get("volumes", []):
        if isinstance(spec, dict):
            out.append(Mount(spec["source"], spec["target"], bool(spec.get("read_only"))))
            continue
        parts = spec.split(":")
        mode = parts[2] if len(parts) > 2 else "rw"
        out.append(Mount(parts[0], parts[1], "ro" in mode.split(",")))
    return out


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def reserves_gpu(service: dict[str, Any]) -> bool:
    devices = (
        service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    return any(d.get("driver") == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def is_job(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


# --- the compose file --------------------------------------------------------------------


def test_compose_matches_the_specification(compose, compose_with) -> None:
    assert schema_errors(compose.doc) == []
    # and with every variable set to something else than its default
    other = compose_with({"ATRI_GPU_COUNT": "1", "ATRI_PORT": "9000", "ATRI_IMAGE": "reg/atri",
                          "ATRI_CORPUS_SIZE": "tiny", "ATRI_REINDEX": "1"})  # fmt: skip
    assert schema_errors(other.doc) == []


def test_the_schema_check_can_fail(compose) -> None:
    doc = copy.deepcopy(compose.doc)
    doc["services"]["api"]["healthcheck"]["retry"] = 3  # misspelt key
    doc["services"]["api"]["ports"] = [{"target": "eight thousand"}]
    errors = schema_errors(doc)
    assert any("retry" in e for e in errors) and any("ports" in e for e in errors), errors


def test_images_and_builds_agree(compose, dockerfile) -> None:
    stage_names = {s.name for s in dockerfile.stages}
    by_image: dict[str, list[dict[str, Any]]] = {}
    for name, service in compose.services.items():
        assert "image" in service and "build" in service, f"{name}: needs image and build"
        build = service["build"]
        assert build["context"] == "." and build["target"] in stage_names, name
        assert service["image"].endswith(":" + build["target"]), (
            f"{name}: tag {service['image']} does not name the target {build['target']}"
        )
        by_image.setdefault(service["image"], []).append(build)
    for image, builds in by_image.items():
        assert all(b == builds[0] for b in builds), f"{image} is built in different ways"


def test_volumes_are_named_declared_and_owned(compose, dockerfile) -> None:
    declared = set(compose.doc.get("volumes", {}))
    used: set[str] = set()
    targets: dict[str, str] = {}
    writers: dict[str, set[str]] = {}
    docker = dockerfile.text
    for name, service in compose.services.items():
        for m in mounts(service):
            assert m.source in declared, f"{name}: {m.source} is not a named volume"
            used.add(m.source)
            # one path per volume everywhere: an index records absolute clip paths
            assert targets.setdefault(m.source, m.target) == m.target, (name, m)
            if not m.read_only:
                writers.setdefault(m.source, set()).add(name)
            # a fresh named volume copies the image's folder, owner included
            assert re.search(rf"mkdir -p [^&]*{re.escape(m.target)}\b", docker), m.target
            assert f"chown -R atri:atri {Path(m.target).parent}" in docker
    assert used == declared, f"declared but unused: {declared - used}"
    assert writers == {"corpus": {"corpus"}, "index": {"indexer", "api"}, "runs": {"train"}}


def test_job_order_and_profiles(compose) -> None:
    services = compose.services
    default = {n for n, s in services.items() if not s.get("profiles")}
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if is_job(services[dep]):
                assert condition == "service_completed_successfully", (name, dep)
            if name in default:
                assert dep in default, f"{name} (no profile) depends on {dep} (profile only)"
    assert depends_on(services["indexer"]) == {"corpus": "service_completed_successfully"}
    assert depends_on(services["api"]) == {"indexer": "service_completed_successfully"}
    assert default == {"corpus", "indexer", "api"}

    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    assert profiles == {"gpu"}
    gpu = {n for n, s in services.items() if "gpu" in s.get("profiles", [])}
    assert gpu == {n for n, s in services.items() if reserves_gpu(s)}
    assert gpu == {n for n, s in services.items() if s["build"]["target"] == "gpu"}


def test_api_publishes_the_service_port(compose) -> None:
    ports = compose.services["api"]["ports"]
    assert len(ports) == 1 and ports[0].rsplit(":", 1)[-1] == str(SERVICE_PORT)
    assert ports[0].startswith("127.0.0.1:"), "published on loopback unless asked otherwise"
    assert compose.services["api"]["command"] == ["serve"]


def test_api_environment_names_real_settings(compose) -> None:
    from atri.service.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    known = {prefix + name.upper() for name in Settings.model_fields}
    env = compose.raw["services"]["api"]["environment"]
    assert set(env) <= known, set(env) - known
    # host, port and index dir belong to the image; a host's ATRI_PORT is the published port
    assert not set(env) & {f"{prefix}HOST", f"{prefix}PORT", f"{prefix}INDEX_DIR"}
    assert all(value is None for value in env.values()), "pass-through entries only"


def test_every_variable_is_documented(compose) -> None:
    doc = DEPLOY_DOC.read_text()
    passthrough = set(compose.raw["services"]["api"]["environment"])
    missing = sorted(v for v in compose.variables | passthrough if f"`{v}`" not in doc)
    assert not missing, f"docs/deploy.md does not mention {missing}"
