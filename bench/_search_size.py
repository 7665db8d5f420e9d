"""Helpers of bench/search.py: one index size, end to end. Write the index, measure
recall@10 and the in-process floor (text encoding + IndexStore.search, beside the
baseline's numpy scan), then latency and throughput of `atri serve` and the numpy
baseline, both started here and always stopped.

numpy, torch and faiss are imported inside the functions: bench/search.py sets the
thread counts in the environment before any of them loads."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASELINE = Path(__file__).resolve().parent / "_numpy_baseline.py"
K = 10


def thread_env(threads: int) -> dict[str, str]:
    return {
        name: str(threads)
        for name in ("ATRI_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }


@dataclass
class Query:
    lang: str
    text: str
    vec: Any = None  # (E,) float32: a caption's, for recall; None for load queries
    held_out: bool = False


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
        "rerank": meta.get("rerank", 0),
        "tuned_recall_at_10": meta["recall_at_10"],
        "build_s": round(build_s, 1),
    }


def measure_recall(store: Any, root: Path, pool: list[Query], limit: int) -> dict:
    import numpy as np

    from atri.index import layout

    vectors = np.load(layout.version_dir(root, store.version) / "vectors.npy", mmap_mode="r")
    held = [q for q in pool if q.held_out][:limit]  # caption queries
    return {
        "recall_at_10": recall(store, vectors, pool[:limit]),
        "recall_at_10_held_out": recall(store, vectors, held),
        "recall_queries": {"all": min(len(pool), limit), "held_out": len(held)},
    }


def servers_for(root: Path, n: int, args: argparse.Namespace, work: Path, setup: dict) -> dict:
    """`atri serve` (--threads per encoder call, its own encoder count: one per core)
    and the numpy baseline at each of --baseline-threads, over the index at `root`, not
    yet started."""
    from harness import Server, atri_serve, free_port

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ATRI_")}
    names = ["atri", *(f"numpy-{t}t" for t in args.baseline_threads)]
    ports: list[int] = []
    while len(ports) < len(names):
        port = free_port()
        if port not in ports:
            ports.append(port)
    servers = {}
    threads_of = [args.threads, *args.baseline_threads]
    for name, port, threads in zip(names, ports, threads_of, strict=True):
        env = {**base_env, **thread_env(threads)}
        if name == "atri":
            cmd = atri_serve(root, port)
        else:
            cmd = [sys.executable, str(BASELINE), "--index", str(root),
                   "--checkpoint", setup["checkpoint"]["path"], "--port", str(port)]  # fmt: skip
        label = "atri serve" if name == "atri" else f"numpy baseline ({threads} threads)"
        servers[name] = Server(label, cmd, port, env, work / f"{name}-{n}.log")
        servers[name].threads = threads
    return servers


def measure(servers: dict, setup: dict, store: Any, flat: Any, args: argparse.Namespace) -> dict:
    """Warm up, then one phase per client count (--clients, 1 first: latency), each split
    into --rounds rounds in which the floor (one client only) and every server take
    turns, so that all see about the same machine load. Each server gets the pool's
    queries in the same order, each at most once (its query cache never hits)."""
    from _loadgen import Load, run_load
    from _queries import search_path

    model, pool = setup["model"], setup["pool"]
    warm = [f"/search?q=warm-up+query+{i}&lang=eng&k={K}" for i in range(args.warmup)]
    for server in servers.values():
        run_load(server.port, warm, clients=1, seconds=60)
    Floor().round(model, store, flat, pool, 1.0)  # warm-up
    floor = Floor()
    paths = [search_path(q.lang, q.text, K) for q in pool]
    cursor = dict.fromkeys(servers, 0)
    loads = {(name, c): Load(c) for name in servers for c in args.clients}
    slot = args.seconds / args.rounds
    for clients in args.clients:
        for _ in range(args.rounds):
            if clients == 1:
                floor.round(model, store, flat, pool, slot)
            for name, server in servers.items():
                todo = paths[cursor[name] :]
                load, used = run_load(server.port, todo, clients=clients, seconds=slot)
                cursor[name] += used
                loads[name, clients].extend(load)
    return {
        "floor": floor.summary(),
        "servers": {
            name: {
                "threads": server.threads,
                "peak_rss_mb": server.peak_rss_mb(),
                "clients": {str(c): loads[name, c].summary() for c in args.clients},
            }
            for name, server in servers.items()
        },
        "distinct_queries_sent": cursor,
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
            out.update(measure_recall(store, root, setup["captions"], args.recall_queries))
            flat = np.load(layout.version_dir(root, store.version) / "vectors.npy")
            flat = flat.astype(np.float32)  # (N, E) in memory, as the baseline holds it
            servers = servers_for(root, n, args, work, setup)
            out["ports"] = {name: server.port for name, server in servers.items()}
            with ExitStack() as running:
                for server in servers.values():
                    running.enter_context(server)
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
