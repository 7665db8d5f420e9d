"""What every benchmark writes beside its numbers: the machine it ran on (CPU model, and
the load through `uptime`), its results as a JSON file, and a Markdown table of them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def write_json(path: Path, result: dict[str, Any], ensure_ascii: bool = True) -> None:
    """`result` as indented JSON (one space), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, ensure_ascii=ensure_ascii) + "\n")


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; a column title ending in ":" is right-aligned (the ":" dropped)."""
    titles = [c.removesuffix(":") for c in columns]
    align = ["---:" if c.endswith(":") else "---" for c in columns]
    lines = ["| " + " | ".join(titles) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
