"""The scripts under scripts/ are not a package: tests load them by file name."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """name -> the module scripts/<name>.py, registered in sys.modules (dataclasses look
    their module up there)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def shared_cache(feature_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Scripts find the feature cache through XDG_CACHE_HOME (features.default_cache_dir):
    point it at the session's cache, so they reuse what other tests computed."""
    home = tmp_path / "xdg"
    (home / "atri").mkdir(parents=True)
    (home / "atri" / "features").symlink_to(feature_cache, target_is_directory=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return feature_cache
