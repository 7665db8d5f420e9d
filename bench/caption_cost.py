"""What one caption of n characters costs to embed: the time `POST /clips` holds the
model for (every search waits meanwhile), hence `ATRI_MAX_CAPTION_CHARS`
(docs/service.md; docs/reliability.md). The default architecture's text tower (e5-small,
heads seeded), one thread as the service recommends on small machines; the best of
`--repeats` per length (one run for lengths over 4,000).

    .venv/bin/python bench/caption_cost.py --out bench/results/caption_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

LENGTHS = (100, 1000, 4000, 32000)
TEXT = "a bell rings over a steady hum while rain falls on a tin roof "


def measure(lengths: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Milliseconds to embed one English caption of each length."""
    import torch

    from atri.training.encoders.model import ModelConfig, build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(ModelConfig()).eval()
    out = {}
    for n in lengths:
        text = (TEXT * (n // len(TEXT) + 1))[:n]
        best = float("inf")
        for _ in range(repeats if n <= 4000 else 1):
            started = time.perf_counter()
            with torch.inference_mode():
                model.embed_text([text], "eng")
            best = min(best, time.perf_counter() - started)
        out[str(n)] = round(best * 1000, 1)
        print(f"{n:>6} characters: {out[str(n)]:>9.1f} ms", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()[0]
    ms = measure(tuple(int(n) for n in args.lengths.split(",")), args.repeats)
    result = {
        "ms_per_caption": ms,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
