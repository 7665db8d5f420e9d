"""Audio embedding throughput: how fast `atri index build` can embed clips on this machine.

For the default audio encoder (aisfx, through the retrieval model's `embed_audio`, as
the index builder calls it) and for CED-base (random init: speed does not depend on the
weights), on real clips of the demo corpus cut to the same length:

- clips/s and x real time (seconds of audio embedded per second),
- GFLOP per clip, counted by torch's FlopCounterMode on one batch (matmuls and
  convolutions; the STFT/mel front-end is not counted),
- achieved GFLOP/s, against this machine's fp32 `torch.mm` GFLOP/s, measured with the same
  thread count right after each model's run (so both see about the same machine load): the
  ceiling a matmul-bound model could reach,
- the decode + resample rate of the same clips, for the whole indexing picture.

    .venv/bin/python bench/index.py --threads 2 --out bench/results/index.json

Without --manifest it builds the `tiny` demo corpus once (in --corpus, kept). Each model
runs for about --seconds; the load average before and after goes into the JSON, since
other processes on the machine slow everything down.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _results import cpu_model, markdown_table, write_json
from _tiny_corpus import add_corpus_option, tiny_corpus
from torch.utils.flop_counter import FlopCounterMode

from atri.index.build import AUDIO_BATCH
from atri.training.data.audio_io import load_audio
from atri.training.data.manifest import read_manifest

Embed = Callable[[list[torch.Tensor]], torch.Tensor]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", type=Path, help="clips to embed (default: the tiny corpus)")
    add_corpus_option(p)
    p.add_argument("--models", default="aisfx,ced-base", help="comma-separated: aisfx, ced-base")
    p.add_argument("--clips", type=int, default=64, help="distinct clips to cycle through")
    p.add_argument("--clip-seconds", type=float, default=5.0, help="every clip cut/padded to this")
    p.add_argument("--batch", type=int, default=AUDIO_BATCH, help="clips per forward")
    p.add_argument("--seconds", type=float, default=20.0, help="time budget per model")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--matmul-n", type=int, default=2048, help="square size of the mm benchmark")
    p.add_argument("--out", type=Path, default=Path("bench/results/index.json"))
    return p


# --- models ----------------------------------------------------------------------------


def aisfx_model() -> tuple[Embed, int, int]:
    """The default retrieval model; embeds as index/build.py does (backbone + head)."""
    from atri.training.encoders.model import ModelConfig, build_model

    model = build_model(ModelConfig())
    params = sum(p.numel() for p in model.audio_backbone.parameters())
    return model.embed_audio, model.sample_rate, params


def ced_base_model() -> tuple[Embed, int, int]:
    from atri.training.encoders.ced import create_ced

    ced = create_ced("ced-base").eval()
    params = sum(p.numel() for p in ced.parameters())
    return ced.embed, ced.cfg.frontend.sample_rate, params


MODELS: dict[str, Callable[[], tuple[Embed, int, int]]] = {
    "aisfx": aisfx_model,
    "ced-base": ced_base_model,
}


# --- measurements ----------------------------------------------------------------------


def matmul_gflops(n: int, seconds: float) -> dict[str, float]:
    """fp32 torch.mm on (n, n) matrices: 2 n^3 FLOP per product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool, allocator
    rates, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(rates) < 3:
        t = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return {"n": n, "runs": len(rates), "gflops_median": statistics.median(rates),
            "gflops_best": max(rates)}  # fmt: skip


def corpus_manifest(args: argparse.Namespace) -> Path:
    if args.manifest is not None:
        return args.manifest
    return tiny_corpus(args.corpus, workers=max(1, args.threads)) / "train.jsonl"


def load_clips(manifest: Path, n: int, sample_rate: int, length: int) -> tuple[list, float]:
    """n clips at `sample_rate`, cut or zero-padded to `length` samples; and the rate of
    decoding + resampling them (clips/s)."""
    clips = read_manifest(manifest)
    paths = [clips.audio_path(r) for r in list(clips)[:n]]
    if not paths:
        raise SystemExit(f"{manifest}: no clips")
    start = time.perf_counter()
    waves = [load_audio(p, sample_rate) for p in paths]
    decode_rate = len(waves) / (time.perf_counter() - start)
    fixed = [np.pad(w[:length], (0, max(0, length - len(w)))) for w in waves]
    return [torch.from_numpy(np.ascontiguousarray(w)) for w in fixed], decode_rate


def count_flops(embed: Embed, batch: list[torch.Tensor]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        embed(batch)
    return counter.get_total_flops()


def run_model(name: str, args: argparse.Namespace, manifest: Path) -> dict:
    embed, sample_rate, params = MODELS[name]()
    length = round(args.clip_seconds * sample_rate)
    clips, decode_rate = load_clips(manifest, args.clips, sample_rate, length)
    batches = [clips[i : i + args.batch] for i in range(0, len(clips), args.batch)]
    batches = [b for b in batches if len(b) == args.batch] or batches[:1]
    flops = count_flops(embed, batches[0]) / len(batches[0])  # per clip
    with torch.inference_mode():
        embed(batches[0])  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds or done < 2 * len(batches[0]):
            batch = batches[(done // len(batches[0])) % len(batches)]
            embed(batch)
            done += len(batch)
        elapsed = time.perf_counter() - start
    rate = done / elapsed
    achieved = flops * rate / 1e9
    mm = matmul_gflops(args.matmul_n, seconds=min(5.0, args.seconds))
    return {
        "model": name,
        "sample_rate": sample_rate,
        "params_m": round(params / 1e6, 2),
        "batch": len(batches[0]),
        "clip_seconds": args.clip_seconds,
        "clips_embedded": done,
        "seconds": round(elapsed, 2),
        "clips_per_s": round(rate, 2),
        "x_realtime": round(rate * args.clip_seconds, 1),
        "gflop_per_clip": round(flops / 1e9, 3),
        "achieved_gflops": round(achieved, 1),
        "matmul_gflops": round(mm["gflops_median"], 1),
        "matmul_gflops_best": round(mm["gflops_best"], 1),
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "fraction_of_matmul": round(achieved / mm["gflops_median"], 3),
        "decode_clips_per_s": round(decode_rate, 1),
    }


# --- report ----------------------------------------------------------------------------


def table(result: dict) -> str:
    columns = ["model", "params (M):", "batch:", "clips/s:", "x real time:", "GFLOP/clip:",
               "GFLOP/s:", "mm GFLOP/s:", "of mm:", "decode clips/s:"]  # fmt: skip
    rows = [
        [m["model"], m["params_m"], m["batch"], m["clips_per_s"], m["x_realtime"],
         m["gflop_per_clip"], m["achieved_gflops"], m["matmul_gflops"],
         f"{m['fraction_of_matmul']:.0%}", m["decode_clips_per_s"]]
        for m in result["models"]
    ]  # fmt: skip
    return markdown_table(columns, rows)


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(given)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        print(f"unknown model(s) {sorted(unknown)}; known: {sorted(MODELS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    load_before = os.getloadavg()
    manifest = corpus_manifest(args)
    models = [run_model(name, args, manifest) for name in names]
    result = {
        "command": shlex.join(["python", "bench/index.py", *given]),
        "manifest": str(manifest),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "matmul_n": args.matmul_n,
        "models": models,
    }
    write_json(args.out, result)
    print(table(result))
    print(f"\nload average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}; "
          f"{args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
