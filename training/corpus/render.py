"""Rendering planned clips with FluidSynth: real recorded General MIDI samples
(FluidR3 GM, TimGM6mb for the cross-soundfont split, and for training clips the other
soundfonts of soundfonts.py when asked), a melody with a background mixed 6-12 dB under
it, written as 16-bit mono FLAC.

FluidSynth keeps state between notes (voices, envelopes, LFO phases), so each fixed
shard of clips gets its own freshly made synth with chorus and reverb off: a clip then
depends only on its shard's earlier clips, never on which worker rendered it.

Backgrounds come from a pool rendered once per process by its own fresh synth in a
fixed order (identical in every worker): a clip takes one of POOL_VARIANTS recordings
per background and a window of it at an offset drawn from its seed. Rendering every
background anew would double the cost of the corpus for no audible gain.

A soundfont with engine "timidity" (freepats) plays its events through TiMidity++ instead
(timidity.py); melodies, backgrounds, levels and mixing are the same.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import soundfile as sf

from atri.training.corpus.plan import ClipPlan
from atri.training.corpus.schema import BACKGROUNDS, INSTRUMENTS
from atri.training.corpus.soundfonts import SOUNDFONTS
from atri.training.corpus.timidity import TimidityEngine
from atri.training.fileio import atomic_write

SAMPLE_RATE = 44100  # serves CED (16 kHz after resampling) and aisfx (up to 22 kHz)
CLIP_SECONDS = 5.0
MELODY_CH, BACKGROUND_CH, DRUM_CH = 0, 1, 9
SYNTH_GAIN = 0.8  # loud clips peak near -6 dBFS; soft ones stay well above 16-bit noise
LEGATO = 0.9  # a note sounds for this fraction of the inter-onset interval
PEAK_LIMIT = 0.98
POOL_VARIANTS = 8
POOL_SECONDS = 8.0
_pools: dict[str, dict[str, np.ndarray]] = {}  # soundfont -> background -> (V, N); per process


Events = list[tuple[float, int, int, int, int]]  # (time s, 1=on/0=off, channel, key, velocity)


class FluidEngine:
    """A FluidSynth synth with one soundfont loaded, chorus and reverb off."""

    def __init__(self, soundfont: str) -> None:
        import fluidsynth  # imported here: only corpus building needs the C library

        font = SOUNDFONTS[soundfont]
        path = font.path
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"soundfont {path} not found: install the Debian package {font.package} "
                "(scripts/install.sh installs every soundfont the corpus uses)"
            )
        settings = {"synth.chorus.active": 0, "synth.reverb.active": 0, "synth.cpu-cores": 1}
        if font.lazy:
            settings["synth.dynamic-sample-loading"] = 1
        self.synth = fluidsynth.Synth(gain=SYNTH_GAIN, samplerate=SAMPLE_RATE, **settings)
        self.sfid = self.synth.sfload(path)
        if self.sfid < 0:
            raise RuntimeError(f"FluidSynth could not load {path}")

    def close(self) -> None:
        self.synth.delete()

    def select(self, chan: int, bank: int, program: int) -> None:
        self.synth.program_select(chan, self.sfid, bank, program)

    def play(self, events: Events, seconds: float) -> np.ndarray:
        """The events as (N,) float32 mono."""
        total = int(seconds * SAMPLE_RATE)
        chunks, pos = [], 0
        for t, kind, chan, key, vel in sorted(events):
            at = min(int(t * SAMPLE_RATE), total)
            if at > pos:
                chunks.append(self.synth.get_samples(at - pos))
                pos = at
            if kind:
                self.synth.noteon(chan, key, vel)
            else:
                self.synth.noteoff(chan, key)
        if pos < total:
            chunks.append(self.synth.get_samples(total - pos))
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2) / 32768.0
        for chan in (MELODY_CH, BACKGROUND_CH, DRUM_CH):  # nothing rings into the next clip
            self.synth.all_sounds_off(chan)
        self.synth.get_samples(256)
        return stereo.mean(axis=1)


class Renderer:
    """One synth for one shard: a fresh instance per shard keeps rendering deterministic.
    The soundfont's engine plays the events: FluidSynth, or TiMidity++ for freepats."""

    def __init__(self, soundfont: str) -> None:
        self.soundfont = soundfont
        self.engine: FluidEngine | TimidityEngine
        if SOUNDFONTS[soundfont].engine == "timidity":
            self.engine = TimidityEngine(SOUNDFONTS[soundfont], SAMPLE_RATE, DRUM_CH)
        else:
            self.engine = FluidEngine(soundfont)

    def close(self) -> None:
        self.engine.close()

    def _select(self, chan: int, bank: int, program: int) -> None:
        self.engine.select(chan, bank, program)

    def _play(self, events: Events, seconds: float = CLIP_SECONDS) -> np.ndarray:
        """events: (time s, kind 1=on/0=off, channel, key, velocity) -> (N,) float32 mono."""
        return self.engine.play(events, seconds)

    def melody(self, plan: ClipPlan) -> np.ndarray:
        self._select(MELODY_CH, 0, INSTRUMENTS[plan.attrs.instrument])
        events = []
        for i, key in enumerate(plan.melody.pitches):
            start = plan.onset + i * plan.note_seconds
            events.append((start, 1, MELODY_CH, key, plan.velocity))
            events.append((start + LEGATO * plan.note_seconds, 0, MELODY_CH, key, 0))
        return self._play(events)

    def record_background(self, name: str, rng: random.Random, seconds: float) -> np.ndarray:
        if name == "drum beat":
            self._select(DRUM_CH, 128, 0)
            return self._play(drum_events(rng, seconds), seconds)
        self._select(BACKGROUND_CH, 0, BACKGROUNDS[name])
        return self._play(effect_events(name, rng, seconds), seconds)

    def background(self, plan: ClipPlan) -> np.ndarray | None:
        name = plan.attrs.background
        if name == "none":
            return None
        takes = background_pool(self.soundfont)[name]  # (V, N)
        total = int(CLIP_SECONDS * SAMPLE_RATE)
        offset = (plan.bg_seed // POOL_VARIANTS) % (takes.shape[1] - total)
        return takes[plan.bg_seed % POOL_VARIANTS, offset : offset + total]

    def render(self, plan: ClipPlan) -> np.ndarray:
        """The finished clip, (N,) float32 in [-1, 1]."""
        wave = self.melody(plan)
        bg = self.background(plan)
        if bg is not None:
            wave = wave + bg * background_gain(wave, bg, plan.snr_db)
        peak = float(np.abs(wave).max())
        if peak > PEAK_LIMIT:  # rare loud chords of melody and background: avoid clipping
            wave = wave * (PEAK_LIMIT / peak)
        return wave


def background_pool(soundfont: str) -> dict[str, np.ndarray]:
    """Every background recorded POOL_VARIANTS times, (V, N) each: the same in every
    process, since a fresh synth renders it in a fixed order from fixed seeds."""
    if soundfont not in _pools:
        recorder = Renderer(soundfont)
        try:
            _pools[soundfont] = {
                name: np.stack([
                    recorder.record_background(name, random.Random(f"bg:{name}:{v}"), POOL_SECONDS)
                    for v in range(POOL_VARIANTS)
                ])
                for name in BACKGROUNDS
                if name != "none" and name not in SOUNDFONTS[soundfont].lacks
            }
        finally:
            recorder.close()
    return _pools[soundfont]


def background_gain(melody: np.ndarray, background: np.ndarray, snr_db: float) -> float:
    """Gain that puts the background's RMS snr_db below the melody's."""
    rms_m = float(np.sqrt(np.mean(melody.astype(np.float64) ** 2)))
    rms_b = float(np.sqrt(np.mean(background.astype(np.float64) ** 2)))
    if rms_b == 0.0:
        return 0.0
    return rms_m / rms_b * 10 ** (-snr_db / 20)


def effect_events(
    name: str, rng: random.Random, seconds: float
) -> list[tuple[float, int, int, int, int]]:
    ch, end = BACKGROUND_CH, seconds
    if name == "birdsong":
        events, t = [], rng.uniform(0.0, 0.3)
        while t < end:
            key, dur = rng.randint(72, 96), rng.uniform(0.08, 0.4)
            events += [(t, 1, ch, key, rng.randint(70, 110)), (t + dur, 0, ch, key, 0)]
            t += dur + rng.uniform(0.05, 0.5)
        return events
    if name == "telephone ringing":
        events, t = [], rng.uniform(0.0, 0.8)
        while t < end:  # ring-ring, pause
            events += [(t, 1, ch, 72, 100), (t + 1.0, 0, ch, 72, 0)]
            t += rng.uniform(2.2, 2.8)
        return events
    key = rng.randint(55, 67)  # sea waves, helicopter, applause: one sustained texture
    return [(0.0, 1, ch, key, 100), (end, 0, ch, key, 0)]


def drum_events(rng: random.Random, seconds: float) -> list[tuple[float, int, int, int, int]]:
    """A rock beat: kick on 1 and 3, snare on 2 and 4, closed hi-hat on eighths."""
    beat = 60.0 / rng.uniform(88, 132)
    events, t, i = [], rng.uniform(0.0, 0.2), 0
    while t < seconds:
        keys = [42] + ([36] if i % 4 in (0, 2) else []) + ([38] if i % 4 in (1, 3) else [])
        for key in keys:
            events += [(t, 1, DRUM_CH, key, 100), (t + 0.1, 0, DRUM_CH, key, 0)]
        events += [(t + beat / 2, 1, DRUM_CH, 42, 70), (t + beat / 2 + 0.1, 0, DRUM_CH, 42, 0)]
        t += beat
        i += 1
    return events


def write_flac(path: Path, wave: np.ndarray) -> None:
    """16-bit FLAC, written to a temporary name and renamed: a crash never leaves a
    half-written clip under its final name."""
    atomic_write(path, lambda f: sf.write(f, wave, SAMPLE_RATE, subtype="PCM_16", format="FLAC"))


def render_shard(args: tuple[list[ClipPlan], str]) -> list[str]:
    """Render one shard into out_dir/audio/<split>/<id>.flac; returns the clip ids."""
    plans, out_dir = args
    if len({p.soundfont for p in plans}) != 1:
        raise ValueError("a shard renders with one soundfont (build.render_all groups them)")
    renderer = Renderer(plans[0].soundfont)
    try:
        for plan in plans:
            write_flac(Path(out_dir) / audio_relpath(plan), renderer.render(plan))
    finally:
        renderer.close()
    return [p.id for p in plans]


def audio_relpath(plan: ClipPlan) -> str:
    return f"audio/{plan.split}/{plan.id}.flac"
