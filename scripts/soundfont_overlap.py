"""Do freepats's recordings appear in the sf2 soundfonts, TimGM6mb above all (it renders the
reserved test-xfont split)? Exact copies only: three 64-sample windows of every waveform
of every freepats patch are searched, byte for byte, in each soundfont's raw sample data.

    python scripts/soundfont_overlap.py --out docs/results/soundfont-overlap.json

A converted copy (resampled, re-scaled, re-encoded) is not found by this; an exact one is.
So the script also renders one note (middle C, 0.75 s) of each instrument the corpus plays
with freepats in every soundfont and reports the peak normalised cross-correlation of the
waveforms: two renderings of one recording score near 1 (FluidR3 against FluidR3Mono, its
re-edit, is the control), different recordings of a tone lower, though simple, nearly
sinusoidal tones (harp, guitar) score high whatever their source.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

from atri.training.corpus.schema import BACKGROUNDS, INSTRUMENTS
from atri.training.corpus.soundfonts import SOUNDFONTS
from atri.training.fileio import atomic_write_text

PATCHES = Path("/usr/share/midi/freepats")
SF2 = ("timgm6mb", "fluidr3")  # uncompressed sf2; the sf3 fonts hold Ogg-compressed samples
WINDOW = 64


def sf2_sample_bytes(path: str) -> bytes:
    """The 16-bit PCM of an sf2's `smpl` chunk."""
    data = Path(path).read_bytes()
    at = data.find(b"smpl")
    if at < 0:
        raise ValueError(f"{path}: no smpl chunk")
    (size,) = struct.unpack("<I", data[at + 4 : at + 8])
    return data[at + 8 : at + 8 + size]


def patch_waves(path: Path) -> list[np.ndarray]:
    """A GUS patch's waveforms as little-endian int16 (8-bit and unsigned ones converted)."""
    data = path.read_bytes()
    n_waves, offset, waves = data[198], 239, []  # header 129 + instrument 63 + layer 47 bytes
    for _ in range(n_waves):
        if offset + 96 > len(data):
            break  # named below: the file ends inside a header
        (length,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        modes = data[offset + 55]  # bit 0: 16-bit, bit 1: unsigned
        raw = data[offset + 96 : offset + 96 + length]
        if modes & 1:
            wave = np.frombuffer(raw[: len(raw) // 2 * 2], "<u2" if modes & 2 else "<i2")
            wave = wave.astype(np.int32) - (32768 if modes & 2 else 0)
        else:
            wave = np.frombuffer(raw, "u1" if modes & 2 else "i1").astype(np.int32)
            wave = (wave - (128 if modes & 2 else 0)) * 256
        waves.append(wave.astype("<i2"))
        offset += 96 + length
    if offset != len(data) or len(waves) != n_waves:  # the headers must tile the file
        raise ValueError(f"{path}: {n_waves} waveforms end at byte {offset} of {len(data)}; "
                         "not a GUS patch this reader understands")
    return waves


PAIRS = (("freepats", "timgm6mb"), ("freepats", "fluidr3"), ("timgm6mb", "fluidr3"),
         ("fluidr3", "fluidr3mono"))


def peak_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """max over lags of |a ⋆ b| / (|a| |b|), means removed."""
    a, b = a - a.mean(), b - b.mean()
    n = len(a) + len(b) - 1
    full = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    return float(np.abs(full).max() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def rendered_similarity() -> dict[str, dict[str, float]]:
    """instrument -> "a~b" -> peak correlation of one note rendered with soundfonts a and b."""
    from atri.training.corpus.render import MELODY_CH, Renderer

    names = sorted({name for pair in PAIRS for name in pair})
    renderers = {name: Renderer(name) for name in names}
    table = {}
    try:
        for instrument, program in INSTRUMENTS.items():
            if instrument in SOUNDFONTS["freepats"].lacks:
                continue
            notes = {}
            for name, renderer in renderers.items():
                renderer._select(MELODY_CH, 0, program)
                notes[name] = renderer._play(
                    [(0.05, 1, MELODY_CH, 60, 100), (0.8, 0, MELODY_CH, 60, 0)], 1.0
                ).astype(np.float64)
            table[instrument] = {f"{a}~{b}": round(peak_correlation(notes[a], notes[b]), 3)
                                 for a, b in PAIRS}
    finally:
        for renderer in renderers.values():
            renderer.close()
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    pools = {name: sf2_sample_bytes(SOUNDFONTS[name].path) for name in SF2}
    used = {f"{p:03d}" for p in [*INSTRUMENTS.values(), *BACKGROUNDS.values()] if p is not None}
    rows = []
    for path in sorted(PATCHES.glob("*/*.pat")):
        waves = [w for w in patch_waves(path) if len(w) >= 4 * WINDOW]
        found = {name: 0 for name in SF2}
        for wave in waves:
            probes = [wave[k : k + WINDOW].tobytes()
                      for k in (len(wave) // 4, len(wave) // 2, 3 * len(wave) // 4)]
            probes = [p for p in probes if len(set(p)) > 8]  # not silence or a constant
            for name, pool in pools.items():
                found[name] += any(p in pool for p in probes)
        rows.append({"patch": f"{path.parent.name}/{path.name}", "waves": len(waves),
                     "corpus_uses": path.parent.name == "Tone_000" and path.name[:3] in used,
                     "found_in": found})
    summary = {name: {"patches_with_a_copied_wave": [r["patch"] for r in rows
                                                    if r["found_in"][name]],
                      "waves_found": sum(r["found_in"][name] for r in rows)} for name in SF2}
    rendered = rendered_similarity()
    report = {"window": WINDOW, "patches": len(rows), "waves": sum(r["waves"] for r in rows),
              "summary": summary, "rows": rows, "rendered_middle_c": rendered}
    atomic_write_text(args.out, json.dumps(report, indent=1))
    print(f"{report['patches']} freepats patches, {report['waves']} waveforms")
    print("| soundfont | waveforms found | patches | of them the corpus plays |")
    print("|---|---:|---|---|")
    for name in SF2:
        hits = summary[name]["patches_with_a_copied_wave"]
        plays = [r["patch"] for r in rows if r["found_in"][name] and r["corpus_uses"]]
        print(f"| {name} | {summary[name]['waves_found']} | {', '.join(hits) or 'none'} | "
              f"{', '.join(plays) or 'none'} |")
    pairs = [f"{a}~{b}" for a, b in PAIRS]
    print("\n| instrument (middle C) | " + " | ".join(pairs) + " |")
    print("|---|" + "---:|" * len(pairs))
    for instrument, row in rendered.items():
        print(f"| {instrument} | " + " | ".join(f"{row[p]:.2f}" for p in pairs) + " |")
    medians = {p: float(np.median([row[p] for row in rendered.values()])) for p in pairs}
    print("| median | " + " | ".join(f"{medians[p]:.2f}" for p in pairs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
