"""freepats through TiMidity++: which clips it may render, and that it renders only from
its own patches (TiMidity++ also reads the system's config, which maps FluidR3)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from atri.training.corpus.build import plan_corpus
from atri.training.corpus.render import (
    BACKGROUND_CH,
    CLIP_SECONDS,
    DRUM_CH,
    MELODY_CH,
    SAMPLE_RATE,
    Renderer,
)
from atri.training.corpus.schema import BACKGROUNDS, INSTRUMENTS
from atri.training.corpus.soundfonts import SOUNDFONTS, assign_train_soundfonts, covers
from atri.training.corpus.timidity import TimidityEngine, read_config

FREEPATS = SOUNDFONTS["freepats"]


def test_lacks_is_what_the_installed_freepats_config_leaves_out() -> None:
    tones, drums = read_config(FREEPATS.path)
    missing = {name for name, program in {**INSTRUMENTS, **BACKGROUNDS}.items()
               if program is not None and program not in tones}
    assert missing == set(FREEPATS.lacks)
    assert {36, 38, 42} <= drums  # the drum beat's kick, snare and hi-hat


def test_read_config_takes_bank_0_and_drum_set_0_only(tmp_path: Path) -> None:
    cfg = tmp_path / "patches.cfg"
    cfg.write_text("dir /somewhere\n# a comment\ndrumset 0\n 36 Drum/kick.pat amp=100\n"
                   "bank 0\n 0 Tone/piano.pat  # grand\n40 Tone/violin.pat\n"
                   "bank 8\n 1 Tone/other.pat\ndrumset 1\n 38 Drum/snare.pat\n")
    assert read_config(cfg) == (frozenset({0, 40}), frozenset({36}))


def test_programs_the_patches_lack_are_refused_not_borrowed() -> None:
    renderer = Renderer("freepats")
    try:
        with pytest.raises(ValueError, match="maps no bank 0 program 11"):
            renderer._select(MELODY_CH, 0, INSTRUMENTS["vibraphone"])
        with pytest.raises(ValueError, match="program 124"):
            renderer._select(BACKGROUND_CH, 0, BACKGROUNDS["telephone ringing"])
        renderer._select(DRUM_CH, 128, 0)
        with pytest.raises(ValueError, match=r"drum set maps no key \[30\]"):
            renderer._play([(0.0, 1, DRUM_CH, 30, 100), (0.1, 0, DRUM_CH, 30, 0)], 0.5)
    finally:
        renderer.close()


def test_missing_timidity_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="install the Debian package timidity"):
        Renderer("freepats")


def test_clips_draw_only_soundfonts_that_have_their_sounds() -> None:
    plans = plan_corpus("small", 0)["train"]
    alone = assign_train_soundfonts(plans, ["freepats"], 0)
    for plan in alone:  # freepats where it can, FluidR3 where it cannot
        assert plan.soundfont == ("freepats" if covers("freepats", plan) else "fluidr3")
    assert {p.soundfont for p in alone} == {"freepats", "fluidr3"}
    assert not any(covers("freepats", p) for p in alone if p.attrs.instrument == "marimba")
    # lists of complete soundfonts draw as before freepats existed: one uniform choice each
    names = ("fluidr3", "musescore", "opl3")
    rng = random.Random("0:train-soundfont")
    assert [p.soundfont for p in assign_train_soundfonts(plans, names, 0)] == [
        rng.choice(names) for _ in plans]


def test_freepats_renders_its_own_recording_of_a_planned_clip() -> None:
    plans = [p for p in plan_corpus("tiny", 0, ("freepats",))["train"]
             if p.soundfont == "freepats" and p.attrs.background == "drum beat"][:2]
    assert plans
    first, again, fluid = Renderer("freepats"), Renderer("freepats"), Renderer("fluidr3")
    assert isinstance(first.engine, TimidityEngine)
    try:
        for plan in plans:
            wave = first.render(plan)
            assert wave.shape == (int(CLIP_SECONDS * SAMPLE_RATE),) and wave.dtype == np.float32
            assert np.array_equal(wave, again.render(plan))  # a fresh process, the same clip
            plain = fluid.render(plan)
            rms = [float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) for w in (wave, plain)]
            assert rms[0] > 1e-3 and 0.2 < rms[0] / rms[1] < 5  # sounds, at FluidR3's level
            assert not np.allclose(wave, plain, atol=1e-3)
    finally:
        for r in (first, again, fluid):
            r.close()


def test_a_note_sounds_when_its_event_says() -> None:
    """TiMidity++ drops leading silence unless told not to: a late note must stay late."""
    renderer = Renderer("freepats")
    try:
        renderer._select(MELODY_CH, 0, INSTRUMENTS["piano"])
        wave = renderer._play([(1.0, 1, MELODY_CH, 60, 100), (1.5, 0, MELODY_CH, 60, 0)], 2.0)
    finally:
        renderer.close()
    assert wave.shape == (2 * SAMPLE_RATE,)
    loud = np.flatnonzero(np.abs(wave) > 0.01 * np.abs(wave).max())
    assert abs(loud[0] / SAMPLE_RATE - 1.0) < 0.02
