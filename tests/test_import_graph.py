"""The import graph of `atri`, read from the source (lazy imports inside functions
included): no cycle, and every import goes down the layers: training <- index <- service,
the commands and the dispatcher on top (STYLE.md); inside training/, its rooms import only
downward (docs/architecture.md)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# layer of each top-level part; a module may import its own layer or lower ones
LAYERS = {"training": 0, "index": 1, "service": 2, "commands": 3, "cli": 4, "__main__": 4}
# inside training/: the shared base modules, then the rooms, then the training loop on top
# (every other top-level module of training/); objectives and evaluation are siblings
BASE = {"languages", "fileio", "progress", "distributed"}
ROOMS = {"encoders": 1, "data": 2, "corpus": 3, "objectives": 3, "evaluation": 3}
LOOP = 4


def modules() -> dict[str, Path]:
    """Every module of the installed tree, by import name (pyproject's package-dir)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    out = {}
    for package, folder in config["tool"]["setuptools"]["package-dir"].items():
        for path in (ROOT / folder).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


def imports(path: Path, name: str, top_level_only: bool) -> set[str]:
    """The atri modules `path` imports (`from atri.x import y` names atri.x.y when that
    is a module, else atri.x)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("atri")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("atri"):
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_imports_go_down_the_layers() -> None:
    known = modules()
    against = []
    for name, path in known.items():
        for target in imports(path, name, top_level_only=False) & set(known):
            if layer(target) is not None and layer(name) is not None \
                    and layer(target) > layer(name):
                against.append(f"{name} -> {target}")
    assert not against, against


def room(module: str) -> tuple[int, str]:
    """(level, room) of a module of atri.training."""
    part = module.split(".")[2] if module.count(".") >= 2 else ""
    if part in BASE:
        return 0, part
    return ROOMS.get(part, LOOP), part


def test_training_rooms_import_only_downward() -> None:
    known = modules()
    against = []
    for name, path in known.items():
        if not name.startswith("atri.training."):
            continue
        level, here = room(name)
        for target in imports(path, name, top_level_only=False) & set(known):
            if not target.startswith("atri.training."):
                continue
            there_level, there = room(target)
            if there != here and there_level >= level and level < LOOP:
                against.append(f"{name} -> {target}")
    assert not against, against


def test_training_has_at_most_12_top_level_modules() -> None:
    top = sorted(p.name for p in (ROOT / "training").glob("*.py"))
    assert len(top) <= 12, top


def test_no_import_cycle() -> None:
    known = modules()
    graph = {name: imports(path, name, top_level_only=False) & set(known) - {name}
             for name, path in known.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, cycles
