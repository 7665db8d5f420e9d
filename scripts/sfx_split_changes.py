"""What a rebuild of the real-recordings corpus changed: recordings whose split moved,
recordings dropped or added (by package and split), mixtures whose sources were re-drawn,
and where the issue-11 queries' clips (dog barking, glass breaking, thunder, footsteps on snow)
are.

    python scripts/sfx_split_changes.py data/corpus-sfx /tmp/new/corpus-sfx
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from atri.training.corpus.sfx.splits import SPLITS
from atri.training.data.manifest import read_manifest

QUERIES: dict[str, Callable[[dict], bool]] = {
    "dog barking": lambda m: m["concept"] == "dog_bark",
    "glass breaking": lambda m: m["concept"] == "glass_break",
    "thunder": lambda m: m["concept"] == "thunder",
    "footsteps on snow": lambda m: m["concept"] == "footsteps" and m.get("attr_material") == "snow",
}


def load(corpus: Path) -> tuple[dict[str, tuple[str, dict]], dict[str, tuple]]:
    """(package/path -> (split, meta) of the recordings, mixture id -> its sources)."""
    recordings, mixtures = {}, {}
    for split in SPLITS:
        for r in read_manifest(corpus / f"{split}.jsonl"):
            if "package" in r.meta:
                recordings[f"{r.meta['package']}/{r.meta['path']}"] = (split, r.meta)
            else:
                mixtures[r.id] = (r.meta.get("main"), r.meta.get("background"))
    return recordings, mixtures


def where(recordings: dict[str, tuple[str, dict]], wanted: Callable[[dict], bool]) -> str:
    per: dict[str, Counter] = defaultdict(Counter)
    for split, meta in recordings.values():
        if wanted(meta):
            per[split][meta["package"]] += 1
    return "; ".join(
        f"{s} {sum(per[s].values())} ({', '.join(f'{p} {n}' for p, n in sorted(per[s].items()))})"
        for s in SPLITS if s in per
    )


def report(old: Path, new: Path) -> list[str]:
    (a, a_mix), (b, b_mix) = load(old), load(new)
    both = sorted(set(a) & set(b))
    moved = [k for k in both if a[k][0] != b[k][0]]
    lines = [f"recordings: {len(a)} before, {len(b)} after, {len(both)} in both, "
             f"{len(moved)} of them in another split"]
    lines += [f"  {x} -> {y}: {n}" for (x, y), n in
              sorted(Counter((a[k][0], b[k][0]) for k in moved).items())]
    lines += [f"    {a[k][0]} -> {b[k][0]}  {k} ({a[k][1]['concept']})" for k in moved]
    gone = sorted(set(a) - set(b))
    lines.append(f"dropped: {len(gone)}")
    lines += [f"    {a[k][0]}  {k} ({a[k][1]['concept']})" for k in gone]
    added = Counter((b[k][1]["package"], b[k][0]) for k in set(b) - set(a))
    lines.append("added: " + ", ".join(f"{p} {s} {n}" for (p, s), n in sorted(added.items())))
    same = set(a_mix) & set(b_mix)
    redrawn = sum(a_mix[i] != b_mix[i] for i in same)
    lines.append(f"mixtures: {len(same)} ids in both, {redrawn} with other sources")
    for name, wanted in QUERIES.items():
        lines.append(f"{name}: before {where(a, wanted)}")
        lines.append(f"{name}: after  {where(b, wanted)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    print("\n".join(report(args.old, args.new)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
