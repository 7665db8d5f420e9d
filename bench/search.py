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
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
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
SETTINGS = ("sizes", "seconds", "clients", "rounds", "threads", "synth", "noise", "seed", "quick")


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


# --- setup -----------------------------------------------------------------------------


def corpus_manifests(args: argparse.Namespace) -> list[Path]:
    if args.manifest:
        return [m.resolve() for m in args.manifest]
    from atri.training.corpus.build import build

    build(args.corpus, size="tiny", seed=0, workers=2)  # no-op when already built
    found = [args.corpus / f"{split}.jsonl" for split in ("train", "val", "test", "test-xfont")]
    return [path.resolve() for path in found if path.is_file()]


def query_pool(corpus: Any, seed: int) -> list:
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
    from _synth_index import embed_corpus, open_model

    manifests = corpus_manifests(args)
    model, checkpoint, random_heads = open_model(work, args.seed)
    started = time.perf_counter()
    corpus = embed_corpus(model, manifests, args.real_clips)
    pool = query_pool(corpus, args.seed)
    sigma = args.noise * corpus.nn_distance() / math.sqrt(corpus.audio.shape[1])
    summary = {
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

    from atri.training.encoders.text_encoder import set_threads

    set_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    result = new_result(args, given, faiss.__version__)
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
    if args.rounds < 1 or args.clients < 1 or args.seconds <= 0 or args.threads < 1:
        print("--rounds, --clients, --threads must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
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
