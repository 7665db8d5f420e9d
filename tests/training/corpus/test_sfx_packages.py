"""packages.toml as packages.py reads it: entries with their containers and per-path
licences, and a bad file named down to the package and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from atri.training.corpus.sfx.packages import (
    Container,
    Licence,
    Package,
    PackageTableError,
    read_packages,
)

GOOD = """
["a-data"]
licence = "GPL-2+"
holders = "A"
attribution = "Sounds from A; Debian package a-data."
tools = ["a-tool"]
containers = [{ kind = "zip", pattern = "usr/*.zip", members = "audio/" }]
licences = [{ pattern = "*/x/*", spdx = "CC0-1.0", holders = "X" }]

["b.1-data"]
licence = "CC0-1.0"
holders = "B"
attribution = "Sounds from B; Debian package b.1-data."
"""


def test_entries_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "packages.toml"
    path.write_text(GOOD, encoding="utf-8")
    packages = read_packages(path)
    assert list(packages) == ["a-data", "b.1-data"]
    assert packages["a-data"] == Package(
        "a-data",
        "GPL-2+",
        "A",
        "Sounds from A; Debian package a-data.",
        tools=("a-tool",),
        containers=(Container("zip", "usr/*.zip", "audio/"),),
        licences=(Licence("*/x/*", "CC0-1.0", "X"),),
    )
    assert packages["b.1-data"].debs == ("b.1-data",)
    assert packages["a-data"].licence_for("p/x/y.ogg").holders == "X"
    assert packages["a-data"].licence_for("p/z/y.ogg").spdx == "GPL-2+"


# what is wrong: (what the file says, what it says instead, the error after the file's name)
BAD = {
    "kind": ('kind = "zip"', 'kind = "tar"', "[a-data] containers[0] kind: 'tar' is not one"),
    "field": ('holders = "X"', 'holder = "X"', "[a-data] licences[0]: unknown field 'holder'"),
    "missing": ('holders = "A"\n', "", "[a-data] holders: missing"),
    "list": ('tools = ["a-tool"]', 'tools = "a-tool"', "[a-data] tools: expected a list"),
    "string": ('tools = ["a-tool"]', "tools = [3]", "[a-data] tools[0]: expected a non-empty"),
    "empty": ('licence = "CC0-1.0"', 'licence = ""', "[b.1-data] licence: expected a non-empty"),
    "twice": ('["b.1-data"]', '["a-data"]', "line 10"),  # the TOML parser's error
}


@pytest.mark.parametrize("wrong", BAD)
def test_a_bad_file_is_named_with_package_and_field(tmp_path: Path, wrong: str) -> None:
    old, new, message = BAD[wrong]
    path = tmp_path / "packages.toml"
    path.write_text(GOOD.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(PackageTableError) as err:
        read_packages(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PackageTableError, match="nope.toml"):
        read_packages(tmp_path / "nope.toml")
