"""What no error body may show a caller (docs/service.md, "Errors"): Python object reprs
with memory addresses, and absolute paths on the server (the index, the tests' temporary
folders, the installation, the working copy). Used by the fuzz run and the bad-request
scan in tests/reliability/."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
REPR = re.compile(r"<[\w.]+ object at ")
SERVER_FOLDERS = tuple(
    sorted(
        {
            tempfile.gettempdir() + "/",
            sys.prefix + "/",
            str(Path(__file__).resolve().parents[1]) + "/",
            os.path.expanduser("~").rstrip("/") + "/",
        }
    )
)


def leaks(text: str, *folders: str | Path) -> list[str]:
    """The internals `text` (an error body) shows: addresses, object reprs, paths below
    the server's folders or `folders`."""
    found = [m.group(0) for m in ADDRESS.finditer(text)]
    found += [m.group(0) for m in REPR.finditer(text)]
    for folder in (*SERVER_FOLDERS, *(str(f) for f in folders)):
        if folder and folder != "/" and folder in text:
            found.append(folder)
    return found
