"""Melodies of the demo corpus and the split each one belongs to.

A melody is its absolute note sequence (MIDI pitches: the note pattern plus its
transposition). Its split is a seeded hash of those pitches with a salt fixed for the
project, NOT the corpus seed or size: a model trained on any corpus built by this
project never meets its training melodies in any other corpus's val or test split.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

SPLIT_SALT = "atri-melody-split-v1"
# Fractions of the melody space per split; val and test are held-out melodies.
SPLIT_BOUNDS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.9), ("test", 1.0))

# register -> inclusive MIDI pitch band every note of the melody lies in
REGISTER_BANDS: dict[str, tuple[int, int]] = {
    "low": (36, 52),  # C2-E3
    "middle": (55, 71),  # G3-B4
    "high": (74, 90),  # D5-F#6
}
STEPS = (1, 2, 3, 4, 5, 7)  # semitone steps between successive notes
MAX_SPAN = 12  # no melody leaves one octave, so it stays inside its band


@dataclass(frozen=True)
class Melody:
    pitches: tuple[int, ...]

    @property
    def key(self) -> str:
        return "-".join(map(str, self.pitches))


def melody_split(pitches: tuple[int, ...]) -> str:
    """The split ('train', 'val' or 'test') a melody belongs to, by a salted SHA-256."""
    digest = hashlib.sha256(f"{SPLIT_SALT}|{'-'.join(map(str, pitches))}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return next(name for name, bound in SPLIT_BOUNDS if u < bound)


def contour(direction: str, n_notes: int, rng: random.Random) -> list[int]:
    """Pitch offsets from the first note, shaped like `direction`."""
    if direction == "repeated":
        return [0] * n_notes
    if direction == "rising then falling":
        peak = rng.randint(1, n_notes - 2)  # index of the highest note, never first or last
        signs = [1] * peak + [-1] * (n_notes - 1 - peak)
    else:
        signs = [1 if direction == "rising" else -1] * (n_notes - 1)
    offsets = [0]
    for sign in signs:
        offsets.append(offsets[-1] + sign * rng.choice(STEPS))
    return offsets


def draw_melody(
    direction: str, n_notes: int, register: str, split: str, rng: random.Random, tries: int = 400
) -> Melody | None:
    """A melody with these properties whose hash puts it in `split`, or None if `tries`
    draws found none (few 'repeated' melodies exist per register, so some splits have
    none for a given note count)."""
    low, high = REGISTER_BANDS[register]
    for _ in range(tries):
        offsets = contour(direction, n_notes, rng)
        if max(offsets) - min(offsets) > MAX_SPAN:
            continue
        start = rng.randint(low - min(offsets), high - max(offsets))
        pitches = tuple(start + o for o in offsets)
        if melody_split(pitches) == split:
            return Melody(pitches)
    return None
