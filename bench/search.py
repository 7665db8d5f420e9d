"""Search latency and throughput: `atri serve` against a naive numpy flat-scan service,
over indices of 100k and 1M clips, in one run on loopback.

The vectors are synthesised around real clip embeddings, so that they keep their
structure: the clips of a small real corpus (the `tiny` demo corpus, or --manifest) are
embedded with the default checkpoint (a seeded random-head checkpoint of the default
architecture when none is installed), and clip i of an N-clip index is real clip
i mod R plus gaussian noise (norm --noise x the median nearest-neighbour distance of
the real clips), re-normalised (`--synth mix`: a random blend of 3 real clips plus
that noise, a continuum instead of n/R near-copies per clip). The index directory is
written by the project's own code (`write_version`: kind chosen by size, approximate
kinds tuned with the caption vectors as queries); the caption indices hold the real
captions, except those only the test splits carry (held out, so recall is also
measured on queries tuning never saw).

Per size, with the in-process model and index (`IndexStore`) and two loopback servers
(`atri serve`, and bench/_numpy_baseline.py: FastAPI + `V @ q` + np.argpartition, same
checkpoint and text encoder), both started by this script and always stopped:

- recall@10 of the index's top 10 (IndexStore.search) against exact search, over
  real-caption queries (all of them, and the held-out ones);
- the floor, in-process: e5 text encoding of one query + IndexStore.search, per query;
  beside it the baseline's numpy scan of the same query over the same vectors, so that
  index search alone can be set against the flat scan alone;
- latency at 1 client (p50/p95/p99, client-side), then sustained QPS at --clients,
  each phase split into --rounds rounds that alternate floor / service / baseline, so
  that all three see about the same machine load;
- the queries are real captions in 8 languages, shuffled with --seed, and every
  (lang, text) is sent at most once to each server process: the service's query cache
  (service/engine.py, 1024 entries) never hits. Warm-up queries are outside the pool.

Every load is bounded by time (--seconds per phase and service) and by the number of
distinct queries; every request has a timeout.

    .venv/bin/python bench/search.py --out bench/results/search.json
    .venv/bin/python bench/search.py --quick    # 20k clips, 5 s phases: a smoke test

Thread counts (--threads, default 1) go to both servers and to this process through
ATRI_THREADS / OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, which the BLAS and OpenMP
runtimes read once when they load: so main() sets them before importing numpy, torch
or faiss, and the measuring code imports them inside its functions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
BASELINE = BENCH / "_numpy_baseline.py"
K = 10
FULL = {
    "sizes": [100_000, 1_000_000],
    "seconds": 30.0,
    "clients": 4,
    "rounds": 3,
    "real_clips": None,
    "recall_queries": 2000,
    "warmup": 20,
}
QUICK = {
    "sizes": [20_000],
    "seconds": 5.0,
    "clients": 2,
    "rounds": 1,
    "real_clips": 48,
    "recall_queries": 300,
    "warmup": 5,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", type=Path, nargs="+", help="real clips (default: tiny corpus)")
    p.add_argument(
        "--corpus",
        type=Path,
        default=Path("data/corpus-tiny"),
        help="where the tiny corpus is built when no --manifest is given",
    )
    p.add_argument("--sizes", type=int, nargs="+", help="indexed clips (default 100000 1000000)")
    p.add_argument("--seconds", type=float, help="per phase and service (default 30)")
    p.add_argument("--clients", type=int, help="concurrent clients of the QPS phase (default 4)")
    p.add_argument("--rounds", type=int, help="rounds per phase, alternating (default 3)")
    p.add_argument("--real-clips", type=int, help="at most this many real clips (default all)")
    p.add_argument("--recall-queries", type=int, help="queries for recall@10 (default 2000)")
    p.add_argument("--warmup", type=int, help="warm-up requests per server (default 20)")
    p.add_argument("--threads", type=int, default=1, help="threads per process (default 1)")
    p.add_argument(
        "--noise",
        type=float,
        default=0.5,
        help="noise norm / median nearest-neighbour distance of the real clips",
    )
    p.add_argument(
        "--synth",
        choices=("noise", "mix"),
        default="noise",
        help="noise: real clip + gaussian noise (default); mix: blends of 3 real clips + noise",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ready-timeout", type=float, default=900.0, help="server load limit (s)")
    p.add_argument("--work", type=Path, help="parent of the temp dir (indices: ~5 GB at 1M)")
    p.add_argument("--quick", action="store_true", help="20k clips, 5 s phases (smoke test)")
    p.add_argument("--out", type=Path, default=Path("bench/results/search.json"))
    return p


def thread_env(threads: int) -> dict[str, str]:
    return {
        name: str(threads)
        for name in ("ATRI_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }


@dataclass
class Query:
    lang: str
    text: str
    vec: Any  # (E,) float32
    held_out: bool

    def path(self) -> str:
        return "/search?" + urllib.parse.urlencode({"q": self.text, "lang": self.lang, "k": K})


# --- setup -----------------------------------------------------------------------------


def corpus_manifests(args: argparse.Namespace) -> list[Path]:
    if args.manifest:
        return [m.resolve() for m in args.manifest]
    from atri.training.corpus.build import build

    build(args.corpus, size="tiny", seed=0, workers=2)  # no-op when already built
    found = [args.corpus / f"{split}.jsonl" for split in ("train", "val", "test", "test-xfont")]
    return [path.resolve() for path in found if path.is_file()]


def query_pool(corpus: Any, seed: int) -> list[Query]:
    pool = [
        Query(lang, text, corpus.caption_vecs[lang][j], text in corpus.held_out[lang])
        for lang, texts in corpus.captions.items()
        for j, text in enumerate(texts)
    ]
    random.Random(seed).shuffle(pool)
    return pool


# --- in-process measurements -------------------------------------------------------------


def recall(store: Any, vectors: Any, queries: list[Query]) -> float | None:
    """recall@10 of store.search against exact search over the stored vectors."""
    import numpy as np

    from atri.index import faiss_util

    if not queries:
        return None
    q = np.stack([x.vec for x in queries]).astype(np.float32)  # (Q, E)
    position = {clip: i for i, clip in enumerate(store.ids())}
    found = np.full((len(q), K), -1, dtype=np.int64)
    for row, hits in enumerate(store.search(q, K)):
        found[row, : len(hits)] = [position[clip] for clip, _ in hits]
    return round(faiss_util.recall_at_k(found, faiss_util.exact_knn(vectors, q, K)), 4)


@dataclass
class Floor:
    """In-process times per query, ms: e5 encoding and IndexStore.search, as the service
    runs them, and the baseline's numpy scan (`top_k`) over the same vectors in memory:
    the search-only comparison. Queries wrap around the pool (nothing caches here)."""

    encode: list[float] = field(default_factory=list)
    search: list[float] = field(default_factory=list)
    scan: list[float] = field(default_factory=list)
    next: int = 0

    def round(self, model: Any, store: Any, flat: Any, pool: list[Query], seconds: float) -> None:
        import numpy as np
        import torch
        from _numpy_baseline import top_k

        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            query = pool[self.next % len(pool)]
            self.next += 1
            t0 = time.perf_counter()
            with torch.inference_mode():
                vec = model.embed_text([query.text], query.lang).float().cpu().numpy()  # (1, E)
            t1 = time.perf_counter()
            store.search(np.asarray(vec, dtype=np.float32), K)
            t2 = time.perf_counter()
            top_k(flat, vec[0], K)
            t3 = time.perf_counter()
            self.encode.append((t1 - t0) * 1000)
            self.search.append((t2 - t1) * 1000)
            self.scan.append((t3 - t2) * 1000)

    def summary(self) -> dict:
        from _loadgen import percentiles

        search, scan = percentiles(self.search)["p50_ms"], percentiles(self.scan)["p50_ms"]
        return {
            "queries": len(self.encode),
            "encode_p50_ms": percentiles(self.encode)["p50_ms"],
            "search_p50_ms": search,
            "numpy_scan_p50_ms": scan,
            "search_speedup": round(scan / search, 2) if search and scan else None,
            # the floor: encode + search of the same query
            **percentiles([a + b for a, b in zip(self.encode, self.search, strict=True)]),
        }


# --- one size --------------------------------------------------------------------------


def build_size(n: int, args: argparse.Namespace, work: Path, setup: dict) -> tuple[Path, dict]:
    """Write the n-clip index (FAISS may use every core here; nothing is timed but the
    build itself)."""
    import faiss
    from _synth_index import write_index

    corpus, sigma = setup["corpus"], setup["sigma"]
    root = work / f"index-{n}"
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    try:
        meta = write_index(
            root,
            corpus,
            n,
            sigma=sigma,
            seed=args.seed,
            mix=args.synth == "mix",
            identity=setup["model"].identity(),
            checkpoint=setup["checkpoint"],
            source={
                "manifest": str(setup["manifests"][0]),
                "synthetic": {
                    "kind": args.synth,
                    "real_clips": len(corpus.records),
                    "sigma": sigma,
                },
            },
        )
    finally:
        faiss.omp_set_num_threads(args.threads)
    build_s = time.perf_counter() - started
    print(f"[{n}] {meta['factory']} {meta['search_params']} built in {build_s:.0f} s", flush=True)
    return root, {
        "n": n,
        "factory": meta["factory"],
        "search_params": meta["search_params"],
        "tuned_recall_at_10": meta["recall_at_10"],
        "build_s": round(build_s, 1),
    }


def measure_recall(store: Any, root: Path, pool: list[Query], limit: int) -> dict:
    import numpy as np

    from atri.index import layout

    vectors = np.load(layout.version_dir(root, store.version) / "vectors.npy", mmap_mode="r")
    held = [q for q in pool if q.held_out][:limit]
    return {
        "recall_at_10": recall(store, vectors, pool[:limit]),
        "recall_at_10_held_out": recall(store, vectors, held),
        "recall_queries": {"all": min(len(pool), limit), "held_out": len(held)},
    }


def servers_for(root: Path, n: int, args: argparse.Namespace, work: Path, ckpt: str) -> dict:
    """`atri serve` and the numpy baseline over the index at `root`, not yet started."""
    from _loadgen import Server, free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRI_")}
    env.update(thread_env(args.threads))
    ports = [free_port(), free_port()]
    while ports[0] == ports[1]:
        ports[1] = free_port()
    atri = [sys.executable, "-m", "atri", "serve", "--index", str(root), "--port", str(ports[0])]
    baseline = [
        sys.executable,
        str(BASELINE),
        "--index",
        str(root),
        "--checkpoint",
        ckpt,
        "--port",
        str(ports[1]),
    ]
    return {
        "atri": Server("atri serve", atri, ports[0], env, work / f"atri-{n}.log"),
        "baseline": Server("numpy baseline", baseline, ports[1], env, work / f"baseline-{n}.log"),
    }


def measure(servers: dict, setup: dict, store: Any, flat: Any, args: argparse.Namespace) -> dict:
    """Warm up, then the latency phase (one client; floor, service and baseline take
    turns each round) and the throughput phase (--clients; service and baseline take
    turns). Each server gets the pool's queries in the same order, each at most once."""
    from _loadgen import Load, run_load

    model, pool = setup["model"], setup["pool"]
    warm = [f"/search?q=warm-up+query+{i}&lang=eng&k={K}" for i in range(args.warmup)]
    for server in servers.values():
        run_load(server.port, warm, clients=1, seconds=60)
    Floor().round(model, store, flat, pool, 1.0)  # warm-up
    floor = Floor()
    paths = [q.path() for q in pool]
    cursor = dict.fromkeys(servers, 0)
    phases = {"latency": 1, "throughput": args.clients}
    loads = {(name, phase): Load(c) for name in servers for phase, c in phases.items()}
    slot = args.seconds / args.rounds
    for phase, clients in phases.items():
        for _ in range(args.rounds):
            if phase == "latency":
                floor.round(model, store, flat, pool, slot)
            for name, server in servers.items():
                todo = paths[cursor[name] :]
                load, used = run_load(server.port, todo, clients=clients, seconds=slot)
                cursor[name] += used
                loads[name, phase].extend(load)
    return {
        "floor": floor.summary(),
        **{f"{name}_{phase}": load.summary() for (name, phase), load in loads.items()},
        "distinct_queries_sent": cursor,
        "rss_mb": {name: server.rss_mb() for name, server in servers.items()},
    }


def run_size(n: int, args: argparse.Namespace, work: Path, setup: dict) -> dict:
    import numpy as np
    from _search_report import goals

    from atri.index import layout
    from atri.index.store import IndexStore

    root, out = build_size(n, args, work, setup)
    try:
        store = IndexStore.open(root)  # as the service opens it
        try:
            out.update(measure_recall(store, root, setup["pool"], args.recall_queries))
            flat = np.load(layout.version_dir(root, store.version) / "vectors.npy")
            flat = flat.astype(np.float32)  # (N, E) in memory, as the baseline holds it
            servers = servers_for(root, n, args, work, setup["checkpoint"]["path"])
            out["ports"] = {name: server.port for name, server in servers.items()}
            with servers["atri"], servers["baseline"]:
                out["ready_s"] = {
                    name: round(s.wait_ready(args.ready_timeout), 1) for name, s in servers.items()
                }
                out.update(measure(servers, setup, store, flat, args))
        finally:
            store.close()
            flat = None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["goals"] = goals(out)
    return out


# --- run -------------------------------------------------------------------------------


def run(args: argparse.Namespace, given: list[str]) -> int:
    import faiss
    from _search_report import GOALS, cpu_model, table, uptime
    from _synth_index import embed_corpus, open_model

    from atri.training.text_encoder import set_threads

    set_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    settings = (
        "sizes",
        "seconds",
        "clients",
        "rounds",
        "threads",
        "synth",
        "noise",
        "seed",
        "quick",
    )
    result: dict[str, Any] = {
        "command": shlex.join(["python", "bench/search.py", *given]),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "uptime_before": uptime(),
        },
        "settings": {k: getattr(args, k) for k in settings},
        "goals": GOALS,
        "cache": {
            "defeated": True,
            "how": "each (lang, text) is sent at most once to each "
            "server process; warm-up queries are not in the pool",
        },
        "sizes": [],
    }
    work = Path(tempfile.mkdtemp(prefix="atri-bench-search-", dir=args.work))
    try:
        manifests = corpus_manifests(args)
        model, checkpoint, random_heads = open_model(work, args.seed)
        started = time.perf_counter()
        corpus = embed_corpus(model, manifests, args.real_clips)
        pool = query_pool(corpus, args.seed)
        sigma = args.noise * corpus.nn_distance() / math.sqrt(corpus.audio.shape[1])
        result["corpus"] = {
            "manifests": [str(m) for m in manifests],
            "real_clips": len(corpus.records),
            "queries": len(pool),
            "queries_by_lang": {lang: len(t) for lang, t in corpus.captions.items()},
            "held_out_queries": sum(q.held_out for q in pool),
            "embed_s": round(time.perf_counter() - started, 1),
            "noise_sigma": sigma,
            "model": model.identity(),
            "random_heads": random_heads,
        }
        print(f"{len(corpus.records)} real clips, {len(pool)} queries, sigma {sigma:.4f}")
        setup = {
            "model": model,
            "corpus": corpus,
            "pool": pool,
            "sigma": sigma,
            "checkpoint": checkpoint,
            "manifests": manifests,
        }
        for n in args.sizes:
            result["sizes"].append(run_size(n, args, work, setup))
            print(table(result["sizes"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["uptime_after"] = uptime()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(
        f"\nbefore: {result['machine']['uptime_before']}\n"
        f"after:  {result['machine']['uptime_after']}\n{args.out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(given)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.clients < 1 or args.seconds <= 0 or args.threads < 1:
        print("--rounds, --clients, --threads must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    os.environ.update(thread_env(args.threads))  # before numpy, torch, faiss load
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers and remove the
    # temp dir (the servers also get SIGTERM from the kernel if this process dies).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return run(args, given)


if __name__ == "__main__":
    sys.exit(main())
