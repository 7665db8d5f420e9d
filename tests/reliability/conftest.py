"""Reliability test setup. The service tests' fixtures (a real model, a real index of the
tiny corpus, `atri serve` in a child process on a loopback port) are reused from
tests/service/conftest.py, loaded under another module name since test modules cannot
import a conftest; plus a real server over a private copy of the index for this folder."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_SERVICE_CONFTEST = Path(__file__).resolve().parents[1] / "service" / "conftest.py"
_spec = importlib.util.spec_from_file_location("atri_tests_service_fixtures", _SERVICE_CONFTEST)
assert _spec is not None and _spec.loader is not None
service_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = service_fixtures
_spec.loader.exec_module(service_fixtures)

# the fixtures this folder uses, registered here by being names of this module
checkpoint_dir = service_fixtures.checkpoint_dir
index_dir = service_fixtures.index_dir
clip_ids = service_fixtures.clip_ids
records = service_fixtures.records
make_settings = service_fixtures.make_settings
make_client = service_fixtures.make_client
admin_headers = service_fixtures.admin_headers
running_server = service_fixtures.running_server


class Served:
    """A running `atri serve` child process: its URL, process, log and index."""

    def __init__(self, url: str, proc, log: Path, index: Path) -> None:
        self.url, self.proc, self.log, self.index = url, proc, log, index


@pytest.fixture(scope="session")
def reliability_server(
    index_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One real server for this folder's session, over a private copy of the index (the
    fuzzer's admin calls may add clips), with the default limits of api.md."""
    root = tmp_path_factory.mktemp("reliability")
    index = Path(shutil.copytree(index_dir, root / "idx"))
    log = root / "server.log"
    with running_server(index, log=log) as (url, proc):
        yield Served(url, proc, log, index)


@pytest.fixture(scope="session")
def served() -> Callable:
    """running_server, for test modules: (index, *args, env=, log=) -> context manager."""
    return running_server
