"""The image the Dockerfile builds: its targets, a non-root user, entry point, command and
port, the same pins and Debian packages as the install script, and a health check that
asks /health and follows its status (run against a local HTTP server)."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("cpu", "gpu")
SERVICE_PORT = 8000


def test_targets_and_default(dockerfile) -> None:
    names = [s.name for s in dockerfile.stages]
    assert set(TARGETS) <= set(names)
    assert names[-1] == "cpu", "the last stage is what a plain `docker build` makes"
    for target in TARGETS:
        chain = [s.name for s in dockerfile.chain(target)]
        assert "runtime" in chain, f"{target} does not build on the runtime stage"


def test_runs_as_non_root_user(dockerfile) -> None:
    created = re.search(r"useradd\b[^&]*--uid (\d+)", dockerfile.text)
    assert created, "no useradd --uid in the Dockerfile"
    for target in TARGETS:
        user = dockerfile.effective(target, "USER")
        assert user is not None, f"{target}: no USER, runs as root"
        uid = user.args.split(":")[0]
        assert uid not in ("0", "root")
        assert uid == created.group(1), f"{target}: USER {uid} is not the created user"


def test_entrypoint_cmd_and_port(dockerfile) -> None:
    for target in TARGETS:
        assert dockerfile.effective(target, "ENTRYPOINT").exec_form() == ["atri"]
        assert dockerfile.effective(target, "CMD").exec_form() == ["serve"]
        assert dockerfile.effective(target, "EXPOSE").args == str(SERVICE_PORT)
        env = " ".join(i.args for s in dockerfile.chain(target) for i in s.instructions
                       if i.keyword == "ENV")  # fmt: skip
        assert f"ATRI_PORT={SERVICE_PORT}" in env and "ATRI_HOST=0.0.0.0" in env


def test_pins_match_the_install_script(dockerfile) -> None:
    """The image installs what `make install` installs: torch and aisfx versions."""
    docker = dockerfile.text
    install = (REPO / "scripts" / "install.sh").read_text()
    torch_pin = re.search(r"ATRI_TORCH_VERSION:-([\d.]+)", install).group(1)
    aisfx_pin = re.search(r"aisfx==([\d.]+)", install).group(1)
    assert f"ARG TORCH_VERSION={torch_pin}\n" in docker
    assert f"ARG AISFX_VERSION={aisfx_pin}\n" in docker
    assert "--index-url" in docker and "download.pytorch.org/whl/cpu" in docker
    assert "--no-deps" in docker


def test_debian_packages_match_the_install_script(dockerfile) -> None:
    install = (REPO / "scripts" / "install.sh").read_text()
    wanted = set(re.search(r"APT_PACKAGES=\(([^)]*)\)", install).group(1).split())
    apt = next(i.args for s in dockerfile.stages if s.name == "runtime" for i in s.instructions
               if "apt-get install" in i.args)  # fmt: skip
    assert wanted <= set(apt.split()), wanted - set(apt.split())


# --- health check ----------------------------------------------------------------------


def test_healthcheck_is_health_and_same_in_both_files(dockerfile, compose) -> None:
    for target in TARGETS:
        argv = dockerfile.effective(target, "HEALTHCHECK").healthcheck_command()
        assert urlparse(re.search(r"'(http://[^']+)'", argv[-1]).group(1)).path == "/health"
    image_check = dockerfile.effective("cpu", "HEALTHCHECK").healthcheck_command()
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


def run_healthcheck(dockerfile, port: int) -> int:
    argv = dockerfile.effective("cpu", "HEALTHCHECK").healthcheck_command()
    assert argv[0] == "python"
    env = {"ATRI_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True,
                          timeout=30).returncode  # fmt: skip


def test_healthcheck_follows_the_status(
    dockerfile, health_server: tuple[int, type[_Health]]
) -> None:
    port, handler = health_server
    assert run_healthcheck(dockerfile, port) == 0
    handler.status = 503  # loading
    assert run_healthcheck(dockerfile, port) != 0


def test_healthcheck_fails_when_nothing_listens(dockerfile) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run_healthcheck(dockerfile, port) != 0
