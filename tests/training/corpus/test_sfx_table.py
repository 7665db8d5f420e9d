"""The tables that map each recording of a package to a concept, on fixture trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from atri.training.corpus.sfx import table as table_mod
from atri.training.corpus.sfx.table import TableError, load_table, match_package, match_packages

CONCEPTS = {"footsteps", "rain", "dog_bark"}  # plain ids: attributes not checked per concept
VALUES = {"material": ("snow", "wood"), "distance": ("near", "distant")}


def write_sine(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(800) / 16000
    # libsndfile may not write MP3: only the name matters to a table, so WAV inside
    fmt = "WAV" if path.suffix == ".mp3" else None
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 16000, format=fmt)


def write_table(folder: Path, package: str, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{package}.tsv"
    path.write_text(
        "# a comment\npattern\tconcept\tattrs\tnote\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    return path


@pytest.fixture(autouse=True)
def _vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_mod, "vocabulary", lambda: (CONCEPTS, VALUES))


def test_rows_parse(tmp_path: Path) -> None:
    path = write_table(
        tmp_path,
        "p",
        [
            "snd/step_snow*.ogg\tfootsteps\tmaterial=snow;distance=near\tcrisp",
            "music/*\t-\t-\tmusic: the soundtrack",
            "snd/*\train\t-",
        ],
    )
    first, second, third = load_table(path)
    assert (first.concept, dict(first.attrs), first.note, first.line) == (
        "footsteps",
        {"material": "snow", "distance": "near"},
        "crisp",
        3,
    )
    assert (second.concept, second.reason, second.note) == (None, "music", "music: the soundtrack")
    assert (third.concept, third.reason, third.note) == ("rain", None, "")


@pytest.mark.parametrize(
    "row, field, message",
    [
        ("a/*.ogg\tcat_purr\t-", "concept", "unknown concept id 'cat_purr'"),
        ("a/*.ogg\tfootsteps\tcolour=red", "attrs", "unknown attribute 'colour'"),
        ("a/*.ogg\tfootsteps\tmaterial=lava", "attrs", "material='lava' not one of"),
        ("a/*.ogg\tfootsteps\tmaterial", "attrs", "unknown attribute 'material'"),
        ("a/*.ogg\t-\t-\tboring", "note", "exclusion reason 'boring'"),
        ("a/*.ogg\t-\t-", "note", "exclusion reason ''"),
        ("a/*.ogg\t-\tmaterial=snow\tmusic", "attrs", "an excluded row has no attributes"),
        ("a/*.ogg footsteps -", None, "expected 3 or 4 tab-separated fields"),
    ],
)
def test_bad_rows_name_file_line_and_field(
    tmp_path: Path, row: str, field: str | None, message: str
) -> None:
    path = write_table(tmp_path, "p", ["ok/*.ogg\train\t-", row])
    prefix = f"{path}:4: " + (f"{field}: " if field else "")
    with pytest.raises(TableError) as err:
        load_table(path)
    assert str(err.value).startswith(prefix) and message in str(err.value)


def test_missing_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="nope.tsv: no such table"):
        load_table(tmp_path / "nope.tsv")


def test_match_first_row_wins_and_stale_rows_warn(tmp_path: Path) -> None:
    root, tables = tmp_path / "root", tmp_path / "tables"
    for rel in ("snd/step_snow1.wav", "snd/step_wood1.wav", "snd/dog.flac", "music/theme.wav"):
        write_sine(root / "pkg" / rel)
    (root / "pkg/snd/readme.txt").write_text("not audio")
    write_table(
        tables,
        "pkg",
        [
            "snd/step_snow*\tfootsteps\tmaterial=snow",
            "snd/step_*\tfootsteps\tmaterial=wood",
            "snd/dog.*\tdog_bark\t-\tone bark",
            "snd/cat.*\tdog_bark\t-",
            "music/**\t-\t-\tmusic",
        ],
    )
    result = match_package("pkg", root, tables)
    by_rel = {s.relpath: s for s in result.sources}
    assert sorted(by_rel) == [
        "music/theme.wav",
        "snd/dog.flac",
        "snd/step_snow1.wav",
        "snd/step_wood1.wav",
    ]
    assert by_rel["snd/step_snow1.wav"].attrs == {"material": "snow"}
    assert by_rel["snd/step_wood1.wav"].attrs == {"material": "wood"}
    dog = by_rel["snd/dog.flac"]
    assert (dog.package, dog.concept, dog.excluded, dog.note) == (
        "pkg",
        "dog_bark",
        None,
        "one bark",
    )
    assert dog.path == (root / "pkg/snd/dog.flac").resolve() and dog.path.is_absolute()
    assert (by_rel["music/theme.wav"].concept, by_rel["music/theme.wav"].excluded) == (
        None,
        "music",
    )
    assert result.warnings == [f"{tables / 'pkg.tsv'}:6: pattern 'snd/cat.*' matched no file"]


def test_unmatched_audio_file_is_an_error_naming_it(tmp_path: Path) -> None:
    root, tables = tmp_path / "root", tmp_path / "tables"
    write_sine(root / "pkg/snd/rain.wav")
    (root / "pkg/snd/mystery.wv").write_bytes(b"wvpk")  # .wv counts as audio too
    write_table(tables, "pkg", ["snd/rain.wav\train\t-"])
    with pytest.raises(TableError) as err:
        match_package("pkg", root, tables)
    assert str(tables / "pkg.tsv") in str(err.value) and "snd/mystery.wv" in str(err.value)


def test_match_packages_concatenates_and_needs_the_tree(tmp_path: Path) -> None:
    root, tables = tmp_path / "root", tmp_path / "tables"
    write_sine(root / "a/x.wav")
    write_sine(root / "b/y.wav")
    write_table(tables, "a", ["*\train\t-"])
    write_table(tables, "b", ["*\t-\t-\tui"])
    write_table(tables, "c", ["*\train\t-"])
    assert [s.package for s in match_packages(["a", "b"], root, tables).sources] == ["a", "b"]
    with pytest.raises(TableError, match="package c is not extracted"):
        match_packages(["c"], root, tables)


@pytest.mark.parametrize(
    "package", ["0ad-data", "openclonk-data", "gcompris-qt-data", "openttd-opensfx"]
)
def test_committed_container_tables_parse(package: str) -> None:
    """The reviewed tables name only known concepts and attribute values (the lexicon's,
    once it has taken the concepts these tables asked for)."""
    from atri.training.corpus.sfx import lexicon

    rows = load_table(
        table_mod.TABLES_DIR / f"{package}.tsv", lexicon.CONCEPTS, lexicon.ATTRIBUTE_VALUES
    )
    assert rows and all(r.concept or r.reason for r in rows)


def test_attributes_must_apply_to_the_lexicon_concept(tmp_path: Path) -> None:
    from atri.training.corpus.sfx import lexicon

    assert "material" not in lexicon.CONCEPTS["rain"].attributes
    path = write_table(
        tmp_path, "p", ["a/*.ogg\tfootsteps\tmaterial=snow", "b/*.ogg\train\tmaterial=snow"]
    )
    with pytest.raises(TableError, match=rf"{path}:4: attrs: 'material' does not apply to 'rain'"):
        load_table(path, lexicon.CONCEPTS, lexicon.ATTRIBUTE_VALUES)
    allowed = lexicon.CONCEPTS["digging"].materials
    assert "glass" not in allowed
    path = write_table(tmp_path, "q", ["a/*.ogg\tdigging\tmaterial=glass"])
    with pytest.raises(
        TableError, match=rf"{path}:3: attrs: material='glass' not allowed for 'digging'"
    ):
        load_table(path, lexicon.CONCEPTS, lexicon.ATTRIBUTE_VALUES)


SCRATCH = "usr/share/scratch/Media/Sounds/"
QABCS = "usr/share/qabcs/abcs/"
ARDENTRYST = "usr/share/games/ardentryst/"
# package -> {path inside the deb: concept and attrs, or the exclusion reason}; real paths
REVIEWED = {
    "scratch": {
        SCRATCH + "Animal/Dog1.wav": ("dog_bark", {}),
        SCRATCH + "Animal/Dog2.wav": ("dog_bark", {}),
        SCRATCH + "Human/Footsteps-2.mp3": ("footsteps", {}),
        SCRATCH + "Human/Laugh-male3.mp3": ("laughter", {}),
        SCRATCH + "Effects/Pop.wav": "too_short",
        SCRATCH + "Music Loops/DrumSet1.mp3": "music",
        SCRATCH + "Vocals/Join-us.mp3": "speech",
        SCRATCH + "Electronic/Laser1.wav": "synthetic",
    },
    "qabcs-data": {
        QABCS + "all/noises/dog.ogg": ("dog_bark", {}),
        QABCS + "all/noises/vase.ogg": ("glass_break", {}),
        QABCS + "all/noises/dunno.ogg": "unclear",
        QABCS + "all/noises/austrian_flag.ogg": "music",
        QABCS + "all/sounds/cheering.ogg": ("crowd_cheer", {}),
        QABCS + "en/sounds/words/dog.ogg": "speech",
        QABCS + "de/sounds/alpha/A.ogg": "speech",
    },
    "ardentryst": {
        ARDENTRYST + "Sounds/NYX/NYX_STEP_SNOW3.ogg": ("footsteps", {"material": "snow"}),
        ARDENTRYST + "Sounds/NYX/NYX_STEP_CONCRETE1.ogg": ("footsteps", {"material": "concrete"}),
        ARDENTRYST + "Sounds/PYR/PYR_STEP_SNOW3.ogg": "duplicate",
        ARDENTRYST + "Sounds/PYR/PYR_PAIN2.ogg": ("pain_grunt", {}),
        ARDENTRYST + "Sounds/NYX/NYX_LAND1.ogg": "unclear",
        ARDENTRYST + "Sounds/VOI_Intro_1.ogg": "speech",
        ARDENTRYST + "Sounds/menu-item.ogg": "ui",
        ARDENTRYST + "Music/theme1.ogg": "music",
    },
}


@pytest.mark.parametrize("package", sorted(REVIEWED))
def test_committed_tables_map_the_packages_real_paths(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files at the paths the debs ship (spaces, mixed extensions, per-language folders)
    get the concept or the exclusion their reviewed table gives them."""
    from atri.training.corpus.sfx import lexicon

    real = (lexicon.CONCEPTS, lexicon.ATTRIBUTE_VALUES)
    monkeypatch.setattr(table_mod, "vocabulary", lambda: real)
    for rel in REVIEWED[package]:
        write_sine(tmp_path / package / rel)
    sources = match_package(package, tmp_path).sources
    got = {s.relpath: s.excluded or (s.concept, s.attrs) for s in sources}
    assert got == REVIEWED[package]
