"""The demo corpus's attribute schema (shared spec corpus.md): canonical English values,
the General MIDI sounds that render them, and the attributes of one clip."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# instrument -> General MIDI program (0-based), corpus.md
INSTRUMENTS: dict[str, int] = {
    "piano": 0,
    "vibraphone": 11,
    "marimba": 12,
    "church organ": 19,
    "nylon guitar": 24,
    "electric bass": 33,
    "violin": 40,
    "cello": 42,
    "harp": 46,
    "choir": 52,
    "trumpet": 56,
    "saxophone": 65,
    "oboe": 68,
    "clarinet": 71,
    "flute": 73,
    "steel drums": 114,
}
REGISTERS: tuple[str, ...] = ("low", "middle", "high")
DIRECTIONS: tuple[str, ...] = ("rising", "falling", "repeated", "rising then falling")
TEMPOS: tuple[str, ...] = ("slow", "moderate", "fast")
LOUDNESS: tuple[str, ...] = ("soft", "loud")
N_NOTES: tuple[int, ...] = (2, 3, 4, 5)
# background -> GM program, or None for silence; "drum beat" plays on the percussion channel
BACKGROUNDS: dict[str, int | None] = {
    "none": None,
    "sea waves": 122,
    "birdsong": 123,
    "telephone ringing": 124,
    "helicopter": 125,
    "applause": 126,
    "drum beat": None,
}

# attribute name -> its values, in the order clusters and statistics use
ATTRIBUTES: dict[str, tuple] = {
    "instrument": tuple(INSTRUMENTS),
    "register": REGISTERS,
    "direction": DIRECTIONS,
    "tempo": TEMPOS,
    "loudness": LOUDNESS,
    "n_notes": N_NOTES,
    "background": tuple(BACKGROUNDS),
}


@dataclass(frozen=True)
class ClipAttributes:
    """What a caption may say about a clip. Every field holds a canonical value above."""

    instrument: str
    register: str
    direction: str
    tempo: str
    loudness: str
    n_notes: int
    background: str

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {values}")
        if self.direction == "rising then falling" and self.n_notes < 3:
            raise ValueError("'rising then falling' needs at least 3 notes")

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)
