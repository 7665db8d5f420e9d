"""`atri`: every module of src/atri/commands with a `main` is a listed subcommand, each
answers --help through the dispatcher, and --version is the package's."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from atri.cli import COMMANDS, main

COMMANDS_DIR = Path(__file__).resolve().parents[2] / "src" / "atri" / "commands"


def test_every_command_module_is_listed(capsys) -> None:
    modules = {f"atri.commands.{p.stem}" for p in COMMANDS_DIR.glob("*.py")
               if hasattr(importlib.import_module(f"atri.commands.{p.stem}"), "main")}
    assert modules == {module for module, _ in COMMANDS.values()}
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_answers_help(name: str, capsys) -> None:
    assert main([name, "--help"]) == 0
    assert f"atri {name}" in capsys.readouterr().out


def test_version_is_the_package_metadata() -> None:
    done = subprocess.run([sys.executable, "-m", "atri", "--version"], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == version("atri")
