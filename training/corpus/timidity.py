"""Playing events with TiMidity++ for patch sets FluidSynth cannot load (freepats: GUS
patches), for render.Renderer.

The engine takes the same events as the FluidSynth one; each call writes them as a MIDI
file and runs `timidity` on it, so a recording depends on its events only. TiMidity++
always reads the system's /etc/timidity/timidity.cfg as well (on Debian it maps every
program to FluidR3), and a program the patch set lacks would quietly play from there: the
engine therefore refuses any program or drum key its own config does not map.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from atri.training.corpus.soundfonts import Soundfont

# TiMidity++'s --volume at which freepats plays the corpus's instruments at FluidR3's level
# under render.SYNTH_GAIN (median RMS ratio over the 13 instruments both have: 1.02)
VOLUME = 100
TICKS_PER_SECOND = 2000  # 1000 ticks per beat at MIDI's default 120 beats per minute


def read_config(path: str | Path) -> tuple[frozenset[int], frozenset[int]]:
    """(programs of tone bank 0, keys of drum set 0) that a TiMidity++ config maps."""
    tones: set[int] = set()
    drums: set[int] = set()
    section: set[int] | None = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[:2] == ["bank", "0"]:
            section = tones
        elif words[:2] == ["drumset", "0"]:
            section = drums
        elif words[0] in ("bank", "drumset"):
            section = None  # other banks and drum sets: the corpus never selects them
        elif section is not None and re.fullmatch(r"\d+", words[0]):
            section.add(int(words[0]))
    return frozenset(tones), frozenset(drums)


class TimidityEngine:
    """render.Renderer's engine over TiMidity++: one fresh process per recording."""

    def __init__(self, font: Soundfont, sample_rate: int, drum_channel: int) -> None:
        if shutil.which("timidity") is None:
            raise FileNotFoundError("timidity not found: install the Debian package timidity "
                                    f"(scripts/install.sh installs it) to play {font.package}")
        if not Path(font.path).is_file():
            raise FileNotFoundError(f"{font.path} not found: install the Debian package "
                                    f"{font.package} (scripts/install.sh installs it)")
        self.config = font.path
        self.sample_rate, self.drum_channel = sample_rate, drum_channel
        self.tones, self.drums = read_config(font.path)
        self.programs: dict[int, int] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="atri-timidity-")

    def close(self) -> None:
        self._tmp.cleanup()

    def select(self, chan: int, bank: int, program: int) -> None:
        if chan == self.drum_channel:
            if (bank, program) != (128, 0):
                raise ValueError(f"{self.config}: only the standard drum set plays on the "
                                 f"drum channel, not bank {bank} program {program}")
        elif bank != 0 or program not in self.tones:
            raise ValueError(f"{self.config} maps no bank {bank} program {program}: TiMidity++ "
                             "would play it from the system's default configuration")
        self.programs[chan] = 0 if chan == self.drum_channel else program

    def play(self, events: list[tuple[float, int, int, int, int]], seconds: float) -> np.ndarray:
        """The events as (N,) float32 mono."""
        import mido  # imported here: only corpus building writes MIDI

        missing = sorted({key for _, _, chan, key, _ in events
                          if chan == self.drum_channel and key not in self.drums})
        if missing:
            raise ValueError(f"{self.config}'s drum set maps no key {missing}")
        song = mido.MidiFile(ticks_per_beat=TICKS_PER_SECOND // 2)
        track = mido.MidiTrack()
        song.tracks.append(track)
        track.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
        for chan, program in sorted(self.programs.items()):
            track.append(mido.Message("program_change", channel=chan, program=program, time=0))
        now = 0
        for t, kind, chan, key, vel in sorted(events):
            tick = round(min(t, seconds) * TICKS_PER_SECOND)
            message = "note_on" if kind else "note_off"
            track.append(mido.Message(message, channel=chan, note=key, velocity=vel,
                                      time=tick - now))
            now = tick
        end = round(seconds * TICKS_PER_SECOND)
        track.append(mido.MetaMessage("end_of_track", time=max(end - now, 0)))
        mid, wav = Path(self._tmp.name) / "events.mid", Path(self._tmp.name) / "out.wav"
        song.save(mid)
        cmd = ["timidity", "-c", self.config, "-s", str(self.sample_rate), "-Ow", "--output-mono",
               "--output-16bit", f"--volume={VOLUME}", "--preserve-silence",
               "-EFreverb=0", "-EFchorus=0", "-o", str(wav), str(mid)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"timidity failed ({done.returncode}) with {self.config}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
        wave, rate = sf.read(wav, dtype="float32")
        wav.unlink()
        if rate != self.sample_rate:
            raise RuntimeError(f"timidity wrote {rate} Hz, asked for {self.sample_rate}")
        total = int(seconds * self.sample_rate)  # a release past the end is cut, as FluidSynth's is
        return np.pad(wave[:total], (0, max(total - len(wave), 0)))
