"""scripts/soundfont_overlap.py on the installed freepats and sf2 files: every patch parses
(its waveform headers tile the file), and an exact copy is found where one exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def test_every_freepats_patch_parses(load_script) -> None:
    overlap = load_script("soundfont_overlap")
    patches = sorted(overlap.PATCHES.glob("*/*.pat"))
    assert len(patches) > 100
    for path in patches:
        waves = overlap.patch_waves(path)
        assert waves and all(w.dtype == np.dtype("<i2") for w in waves)


def test_a_truncated_patch_is_named(load_script, tmp_path: Path) -> None:
    overlap = load_script("soundfont_overlap")
    bad = tmp_path / "cut.pat"
    piano = overlap.PATCHES / "Tone_000" / "000_Acoustic_Grand_Piano.pat"
    bad.write_bytes(piano.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.pat: .* end at byte"):
        overlap.patch_waves(bad)


def test_copies_are_found_in_the_sf2_that_holds_them(load_script, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    overlap = load_script("soundfont_overlap")
    monkeypatch.setattr(overlap, "SF2", ("timgm6mb",))  # FluidR3's 140 MB: 40 s more
    piano = overlap.patch_waves(overlap.PATCHES / "Tone_000" / "000_Acoustic_Grand_Piano.pat")
    fake = tmp_path / "copy.sf2"  # an sf2 whose sample chunk holds one freepats wave
    pcm = piano[0].tobytes()
    fake.write_bytes(b"RIFF....sfbkLIST" + b"smpl" + len(pcm).to_bytes(4, "little") + pcm)
    assert pcm in overlap.sf2_sample_bytes(str(fake))
    out = tmp_path / "overlap.json"
    assert overlap.main(["--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["patches"] == len(report["rows"]) > 100
    # TimGM6mb holds freepats's ocarina byte for byte (a copy the search must find)
    assert "Tone_000/079_Ocarina.pat" in report["summary"]["timgm6mb"]["patches_with_a_copied_wave"]


def test_renderings_of_one_recording_correlate_more_than_of_different_ones(load_script):
    overlap = load_script("soundfont_overlap")
    rng = np.random.default_rng(0)
    tone = rng.standard_normal(4000)
    assert overlap.peak_correlation(tone, np.concatenate([np.zeros(300), 0.5 * tone])) > 0.99
    assert overlap.peak_correlation(tone, rng.standard_normal(4000)) < 0.1
    table = overlap.rendered_similarity()  # real renderings, both engines
    assert "vibraphone" not in table and len(table) == 13
    control = [row["fluidr3~fluidr3mono"] for row in table.values()]
    assert np.median(control) > 0.85  # FluidR3Mono re-edits FluidR3's recordings
