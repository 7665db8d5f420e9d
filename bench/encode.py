"""Query encoding costs behind the service's choices (docs/benchmarks.md, issue 14):

- per thread count (each in its own process: OpenMP and BLAS read their thread counts
  once), short queries one after the other, each encoded with the default checkpoint's
  `embed_text` and then searched by `faiss_util.search` in an exact flat index of
  --n random 512-d vectors (the service's old 100k path): p50 / p95 / p99 of both;
- at one thread, ms per text when one encoder call takes 1, 2, 4, 8 or 16 queries.

    .venv/bin/python bench/encode.py --threads 1 2 --out bench/results/encode.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("dog bark rain thunder door knock glass break car engine bird song water drip "
         "wind howl").split()  # fmt: skip


def queries(n: int, offset: int = 0) -> list[str]:
    w = len(WORDS)
    return [f"{WORDS[i % w]} {WORDS[(i * 7) % w]} {i}" for i in range(offset, offset + n)]


def child(threads: int, n: int, count: int) -> dict:
    """Runs in a process whose thread variables are set: the per-query loop."""
    import faiss
    import numpy as np
    import torch
    from _loadgen import percentiles

    from atri.index import faiss_util
    from atri.training.encoders.checkpoint import load_checkpoint
    from atri.training.encoders.threads import configure_threads

    configure_threads(threads)
    faiss.omp_set_num_threads(threads)
    faiss_util.configure()
    model, _ = load_checkpoint("default")
    dim = model.embed_text(["warm up"], "eng").shape[1]
    vectors = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    encode, scan = [], []
    for text in queries(count):
        t0 = time.perf_counter()
        with torch.inference_mode():
            vec = model.embed_text([text], "eng").float().numpy()  # (1, E)
        t1 = time.perf_counter()
        faiss_util.search(index, vec, 10)
        scan.append((time.perf_counter() - t1) * 1000)
        encode.append((t1 - t0) * 1000)
    batches = {}
    if threads == 1:
        for size in (1, 2, 4, 8, 16):
            texts = queries(96, offset=10_000 * size)
            t0 = time.perf_counter()
            for start in range(0, len(texts), size):
                with torch.inference_mode():
                    model.embed_text(texts[start : start + size], "eng")
            batches[str(size)] = round((time.perf_counter() - t0) * 1000 / len(texts), 2)
    return {"threads": threads, "encode": percentiles(encode), "scan": percentiles(scan),
            "ms_per_text_by_batch": batches}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--n", type=int, default=100_000, help="vectors of the flat index")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=Path("bench/results/encode.json"))
    args = p.parse_args(argv)
    bench = str(Path(__file__).resolve().parent)
    if bench not in sys.path:
        sys.path.insert(0, bench)
    if args.child is not None:
        print(json.dumps(child(args.child, args.n, args.queries)))
        return 0
    from _results import markdown_table, uptime, write_json
    from _search_size import thread_env

    runs = []
    for threads in args.threads:
        before = uptime()
        cmd = [sys.executable, __file__, "--child", str(threads), "--n", str(args.n),
               "--queries", str(args.queries)]  # fmt: skip
        env = {**os.environ, **thread_env(threads)}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        run = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append({**run, "uptime_before": before, "uptime_after": uptime()})
        print(markdown_table(
            ["threads:", "encode p50 / p95 / p99 ms", "scan p50 / p95 / p99 ms", "load after"],
            [[threads, " / ".join(str(v) for v in run["encode"].values()),
              " / ".join(str(v) for v in run["scan"].values()),
              runs[-1]["uptime_after"].split("load average: ")[-1]]],
        ), flush=True)  # fmt: skip
    given = sys.argv[1:] if argv is None else argv
    write_json(args.out, {"command": "python bench/encode.py " + " ".join(given), "runs": runs})
    for run in runs:
        if run["ms_per_text_by_batch"]:
            print("ms per text by batch size:", run["ms_per_text_by_batch"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
