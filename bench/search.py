"""Search latency and throughput: `atri serve` against a naive numpy flat-scan service,
over indices of 10k, 100k and 1M clips, at 1, 8 and 32 clients, in one run on loopback.

The vectors are synthesised around real clip embeddings, so that they keep their
structure: the clips of a real corpus (--manifest; default the `tiny` demo corpus) are
embedded with the default checkpoint (a seeded random-head checkpoint of the default
architecture when none is installed) through the feature caches `atri train` fills,
and clip i of an N-clip index is real clip i mod R plus gaussian noise (norm --noise x
the median nearest-neighbour distance of the real clips), re-normalised (`--synth mix`:
a random blend of 3 real clips plus that noise). The index directory is written by the
project's own code (`write_version`: kind chosen by size, approximate kinds tuned with
the caption vectors as queries); the caption indices hold the real captions, except
those only the test splits carry (held out, so recall is also measured on queries
tuning never saw).

Per size, with the in-process model and index (`IndexStore`) and loopback servers
(`atri serve`, and bench/_numpy_baseline.py: FastAPI + `V @ q` + np.argpartition, same
checkpoint and text encoder, once per --baseline-threads setting), all started by this
script and always stopped:

- recall@10 of the index's top 10 (IndexStore.search) against exact search, over
  real-caption queries (all of them, and the held-out ones);
- the floor, in-process: e5 text encoding of one query + IndexStore.search, per query;
  beside it the baseline's numpy scan of the same query over the same vectors;
- for each of --clients (1, 8, 32): latency p50/p95/p99 (client-side) and QPS, each
  phase split into --rounds rounds in which the floor (at 1 client) and every server
  take turns, so that all see about the same machine load; each server's peak RSS;
- the load's queries are short and distinct (bench/_queries.py: 2-4 words of a real
  caption, 4-9 characters in Japanese and Chinese), all 8 languages, shuffled with
  --seed; every (lang, text) is sent at most once to each server process, so the
  service's query cache (service/engine.py, 1024 entries) never hits.

Every load is bounded by time (--seconds per phase and server) and by the number of
distinct queries; every request has a timeout.

    .venv/bin/python bench/search.py --manifest data/corpus-sfx/{train,val,test}.jsonl \
        --out bench/results/search.json                  # the full run, docs/benchmarks.md
    .venv/bin/python bench/search.py --quick    # 20k clips, 1 and 4 clients: a smoke test

Thread counts: `atri serve` gets --threads per encoder call (ATRI_THREADS, default 1;
it runs one encoder per core), each baseline its --baseline-threads value, this process
--threads, all through ATRI_THREADS / OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, which the
BLAS and OpenMP runtimes read once when they load: so main() sets them before importing
numpy, torch or faiss, and the measuring code imports them inside its functions.
"""

from __future__ import annotations

import argparse
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
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
FULL = {
    "sizes": [10_000, 100_000, 1_000_000],
    "seconds": 24.0,
    "clients": [1, 8, 32],
    "baseline_threads": [1, 2],
    "rounds": 3,
    "real_clips": None,
    "recall_queries": 2000,
    "warmup": 20,
}
QUICK = {
    "sizes": [20_000],
    "seconds": 2.0,
    "clients": [1, 4],
    "baseline_threads": [1],
    "rounds": 1,
    "real_clips": 48,
    "recall_queries": 300,
    "warmup": 5,
}
SETTINGS = ("sizes", "seconds", "clients", "baseline_threads", "rounds", "threads", "synth",
            "noise", "seed", "quick")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    from _tiny_corpus import add_corpus_option

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", type=Path, nargs="+", help="real clips (default: tiny corpus)")
    add_corpus_option(p)
    p.add_argument("--sizes", type=int, nargs="+", help="indexed clips (default 10k 100k 1M)")
    p.add_argument("--seconds", type=float, help="per phase and server (default 24)")
    p.add_argument("--clients", type=int, nargs="+", help="client counts (default 1 8 32)")
    p.add_argument(
        "--baseline-threads", type=int, nargs="+", help="one baseline per count (default 1 2)"
    )
    p.add_argument("--rounds", type=int, help="rounds per phase, alternating (default 3)")
    p.add_argument("--real-clips", type=int, help="at most this many real clips (default all)")
    p.add_argument("--recall-queries", type=int, help="queries for recall@10 (default 2000)")
    p.add_argument("--warmup", type=int, help="warm-up requests per server (default 20)")
    p.add_argument("--threads", type=int, default=1, help="atri's threads per encoder call")
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
    p.add_argument("--quick", action="store_true", help="20k clips, 2 s phases (smoke test)")
    p.add_argument("--out", type=Path, default=Path("bench/results/search.json"))
    return p


# --- setup -----------------------------------------------------------------------------


def corpus_manifests(args: argparse.Namespace) -> list[Path]:
    if args.manifest:
        return [m.resolve() for m in args.manifest]
    from _tiny_corpus import tiny_corpus

    corpus = tiny_corpus(args.corpus, workers=2)
    found = [corpus / f"{split}.jsonl" for split in ("train", "val", "test", "test-xfont")]
    return [path.resolve() for path in found if path.is_file()]


def caption_pool(corpus: Any, seed: int) -> list:
    """The real captions with their vectors: recall's queries."""
    from _search_size import Query

    pool = [
        Query(lang, text, corpus.caption_vecs[lang][j], text in corpus.held_out[lang])
        for lang, texts in corpus.captions.items()
        for j, text in enumerate(texts)
    ]
    random.Random(seed).shuffle(pool)
    return pool


def prepare(args: argparse.Namespace, work: Path) -> tuple[dict, dict]:
    """(setup, corpus summary): the model and checkpoint, the real clips embedded, the
    shuffled query pool and the noise sigma that every size shares."""
    from _queries import short_queries
    from _search_size import Query
    from _synth_index import embed_corpus, open_model

    manifests = corpus_manifests(args)
    model, checkpoint, random_heads = open_model(work, args.seed)
    started = time.perf_counter()
    corpus = embed_corpus(model, manifests, args.real_clips)
    captions = caption_pool(corpus, args.seed)
    pool = [Query(lang, text) for lang, text in short_queries(corpus.captions, args.seed)]
    sigma = args.noise * corpus.nn_distance() / math.sqrt(corpus.audio.shape[1])
    summary = {
        "manifests": [str(m) for m in manifests],
        "real_clips": len(corpus.records),
        "queries": len(pool),
        "queries_by_lang": dict(Counter(q.lang for q in pool)),
        "caption_queries": len(captions),
        "held_out_queries": sum(q.held_out for q in captions),
        "embed_s": round(time.perf_counter() - started, 1),
        "noise_sigma": sigma,
        "model": model.identity(),
        "random_heads": random_heads,
    }
    print(f"{len(corpus.records)} real clips, {len(pool)} short queries, sigma {sigma:.4f}")
    setup = {
        "model": model,
        "corpus": corpus,
        "pool": pool,
        "captions": captions,
        "sigma": sigma,
        "checkpoint": checkpoint,
        "manifests": manifests,
    }
    return setup, summary


# --- run -------------------------------------------------------------------------------


def new_result(args: argparse.Namespace, given: list[str], faiss_version: str) -> dict[str, Any]:
    """The result before any measurement: command, machine, settings and goals."""
    from _results import cpu_model, uptime
    from _search_report import GOALS

    return {
        "command": shlex.join(["python", "bench/search.py", *given]),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "faiss": faiss_version,
            "uptime_before": uptime(),
        },
        "settings": {k: getattr(args, k) for k in SETTINGS},
        "goals": GOALS,
        "cache": {
            "defeated": True,
            "how": "each (lang, text) is sent at most once to each "
            "server process; warm-up queries are not in the pool",
        },
        "sizes": [],
    }


def run(args: argparse.Namespace, given: list[str]) -> int:
    import faiss
    from _results import uptime, write_json
    from _search_report import table
    from _search_size import run_size

    from atri.training.encoders.threads import configure_threads

    configure_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    result = new_result(args, given, faiss.__version__)
    if args.work:  # a --work folder that does not exist yet is made, not an error
        Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="atri-bench-search-", dir=args.work))
    try:
        setup, result["corpus"] = prepare(args, work)
        for n in args.sizes:
            result["sizes"].append(run_size(n, args, work, setup))
            print(table(result["sizes"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["uptime_after"] = uptime()
    write_json(args.out, result, ensure_ascii=False)
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
    counts = [args.rounds, args.threads, *args.clients, *args.baseline_threads]
    if min(counts) < 1 or args.seconds <= 0:
        print("counts must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    args.clients = sorted(set(args.clients))  # 1 first: the latency phase beside the floor
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from _search_size import thread_env  # the standard library only: nothing reads it yet

    os.environ.update(thread_env(args.threads))  # before numpy, torch, faiss load
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers and remove the
    # temp dir (the servers also get SIGTERM from the kernel if this process dies).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    return run(args, given)


if __name__ == "__main__":
    sys.exit(main())
