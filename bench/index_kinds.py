"""Index kinds by measured cost: recall@10, time per query (one query at a time, one
thread, as the service searches) and build time of FAISS kinds over the same vectors,
with and without exact reranking of the best 64 candidates from the float16 vectors.

The vectors are those bench/search.py indexes: N synthetic clips around the real clip
embeddings of --manifest (real clip + gaussian noise); the queries are the corpus's
real captions. Each kind is built in this process, then swept over its search knob.

    .venv/bin/python bench/index_kinds.py --manifest data/corpus-sfx/{train,val,test}.jsonl \\
        --n 100000 --kinds IVF1024,SQ8 HNSW32,SQ8 --out bench/results/index_kinds.json
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SWEEP = {"nprobe": (4, 8, 16, 32), "efSearch": (64, 128, 192, 256, 384)}


def sweep(index, vectors, queries, truth, rerank: int) -> list[dict]:
    import numpy as np

    from atri.index import faiss_util
    from atri.index.version import search_index

    name = faiss_util.search_params_name(index)
    rows = []
    for value in SWEEP[name]:
        faiss_util.set_search_params(index, {name: value})
        started = time.perf_counter()
        hits = [search_index(index, vectors, rerank, q[None], 10)[0] for q in queries]
        ms = (time.perf_counter() - started) * 1000 / len(queries)
        found = np.array([[i for i, _ in h] + [-1] * (10 - len(h)) for h in hits])
        recall = faiss_util.recall_at_k(found, truth)
        rows.append({name: value, "rerank": rerank, "recall_at_10": round(recall, 4),
                     "ms_per_query": round(ms, 3)})  # fmt: skip
        print(f"  {name}={value} rerank={rerank}: recall {recall:.4f}, {ms:.2f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", type=Path, nargs="+", required=True)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--kinds", nargs="+", default=["IVF1024,SQ8", "HNSW32,SQ8"])
    p.add_argument("--queries", type=int, default=600)
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=Path("bench/results/index_kinds.json"))
    args = p.parse_args(argv)
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import faiss
    import numpy as np
    from _results import uptime, write_json
    from _synth_index import embed_corpus, open_model, synthetic_chunks

    from atri.index import faiss_util
    from atri.index.version import iter_rows

    before = uptime()
    with tempfile.TemporaryDirectory() as work:  # a random-head checkpoint, without a default
        model, _, _ = open_model(Path(work), 0)
        corpus = embed_corpus(model, args.manifest)
    sigma = args.noise * corpus.nn_distance() / math.sqrt(corpus.audio.shape[1])
    chunks = synthetic_chunks(corpus.audio, args.n, sigma, 0, False)
    vectors = np.concatenate([v for _, v in chunks])
    vectors = vectors.astype(np.float16)  # (N, E) as vectors.npy stores them
    queries = np.concatenate(list(corpus.caption_vecs.values()))
    queries = queries[np.random.default_rng(1).permutation(len(queries))[: args.queries]]
    truth = faiss_util.exact_knn(vectors, queries, 10)
    kinds = []
    for factory in args.kinds:
        faiss.omp_set_num_threads(2)  # the build may use both cores; searches one
        started = time.perf_counter()
        train = faiss_util.tuning_queries(vectors, n=min(args.n, faiss_util.TRAIN_MAX), seed=1)
        index = faiss_util.build_index(factory, vectors.shape[1], iter_rows(vectors), train)
        build_s = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        print(f"{factory}: built in {build_s:.0f} s", flush=True)
        rows = [sweep(index, vectors, queries, truth, rerank) for rerank in (0, 64)]
        kinds.append({"factory": factory, "build_s": round(build_s, 1), "sweep": rows[0] + rows[1]})
    given = sys.argv[1:] if argv is None else argv
    write_json(args.out, {"command": "python bench/index_kinds.py " + " ".join(given),
                          "n": args.n, "uptime_before": before, "uptime_after": uptime(),
                          "kinds": kinds})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
