"""Deploy test setup: the Dockerfile and docker-compose.yml read into small models (stages
of instructions; the compose document with its variables substituted as Compose does),
reaching the test modules as fixtures, since those cannot import a conftest."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"


# --- Dockerfile ----------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        return json.loads(text) if text.startswith("[") else None

    def healthcheck_command(self) -> list[str]:
        """A HEALTHCHECK's CMD, which must be in exec form."""
        options, sep, command = self.args.partition("CMD ")
        assert sep, f"HEALTHCHECK without CMD: {self.args}"
        argv = json.loads(command)
        assert isinstance(argv, list), "HEALTHCHECK CMD should be in exec form"
        return argv


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    text: str
    stages: list[Stage]

    def chain(self, target: str) -> list[Stage]:
        """The target stage, then the stage it is built FROM, and so on."""
        by_name = {s.name: s for s in self.stages if s.name}
        chain = [by_name[target]]
        while chain[-1].base in by_name:
            chain.append(by_name[chain[-1].base])
        return chain

    def effective(self, target: str, keyword: str) -> Instruction | None:
        """The instruction of this kind that is in force in `target` (inherited ones too)."""
        for stage in self.chain(target):
            found = [i for i in stage.instructions if i.keyword == keyword]
            if found:
                return found[-1]
        return None


def parse_dockerfile(text: str) -> Dockerfile:
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
    return Dockerfile(text, stages)


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
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


@pytest.fixture(scope="session")
def compose() -> Compose:
    """docker-compose.yml with no variable set (every default in force)."""
    return load_compose()


@pytest.fixture(scope="session")
def compose_with() -> Callable[[dict[str, str]], Compose]:
    """env -> docker-compose.yml with those variables set."""
    return load_compose
