"""Recall@10 of the compact index kind on real embeddings: every clip of a real corpus
(no synthetic copies), embedded with the default checkpoint through the feature caches,
indexed as `IVF<nlist>,SQ8` (nlist as `choose_factory` sets it for that many vectors,
although a corpus this small gets `Flat` by default) and tuned like any index to
recall@10 >= 0.95 with the captions as queries, except those only the test splits carry.
Recall is then measured as the service searches (`IndexStore.search`: the best 64
candidates reranked exactly from vectors.npy), over all captions and over the held-out
ones, and at the tuned nprobe without the reranking, beside it.

    .venv/bin/python bench/recall_real.py --corpus data/corpus-sfx data/demo-sub3k \\
        --out bench/results/recall_real.json
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def nlist_for(n: int) -> int:
    return 2 ** round(math.log2(4 * math.sqrt(n)))


def one_corpus(folder: Path, work: Path, model, checkpoint: dict, queries: int) -> dict:
    import numpy as np
    from _search_size import Query, measure_recall
    from _synth_index import embed_corpus, write_index

    from atri.index import faiss_util, layout
    from atri.index.store import IndexStore
    from atri.index.version import search_index

    manifests = sorted(folder.glob("*.jsonl"))
    corpus = embed_corpus(model, manifests)
    n = len(corpus.records)
    factory = f"IVF{nlist_for(n)},SQ8"
    root = work / folder.name
    started = time.perf_counter()
    meta = write_index(root, corpus, n, sigma=0.0, seed=0, mix=False,
                       identity=model.identity(), checkpoint=checkpoint,
                       source={"manifest": str(manifests[0])}, factory=factory)  # fmt: skip
    build_s = time.perf_counter() - started
    pool = [
        Query(lang, text, corpus.caption_vecs[lang][j], text in corpus.held_out[lang])
        for lang, texts in corpus.captions.items()
        for j, text in enumerate(texts)
    ]
    random.Random(0).shuffle(pool)
    store = IndexStore.open(root)
    try:
        out = measure_recall(store, root, pool, queries)
        base = store._snap.base
        vectors = np.load(layout.version_dir(root, store.version) / "vectors.npy", mmap_mode="r")
        q = np.stack([x.vec for x in pool[:queries]]).astype(np.float32)
        hits = search_index(base.index, base.vectors, 0, q, 10)  # the same nprobe, no rerank
        found = np.array([[i for i, _ in row] + [-1] * (10 - len(row)) for row in hits])
        truth = faiss_util.exact_knn(vectors, q, 10)
        out["recall_at_10_without_rerank"] = round(faiss_util.recall_at_k(found, truth), 4)
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "corpus": str(folder),
        "clips": n,
        "factory": factory,
        "search_params": meta["search_params"],
        "rerank": meta.get("rerank", 0),
        "tuned_recall_at_10": meta["recall_at_10"],
        "build_s": round(build_s, 1),
        **out,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, nargs="+", required=True, help="corpus folders")
    p.add_argument("--queries", type=int, default=4000, help="caption queries at most")
    p.add_argument("--out", type=Path, default=Path("bench/results/recall_real.json"))
    args = p.parse_args(argv)
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from _results import markdown_table, uptime, write_json
    from _synth_index import open_model

    work = Path(tempfile.mkdtemp(prefix="atri-bench-recall-"))
    try:
        model, checkpoint, random_heads = open_model(work, 0)
        rows = [one_corpus(c, work, model, checkpoint, args.queries) for c in args.corpus]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    given = sys.argv[1:] if argv is None else argv
    result = {"command": "python bench/recall_real.py " + " ".join(given),
              "random_heads": random_heads, "uptime": uptime(), "corpora": rows}  # fmt: skip
    write_json(args.out, result, ensure_ascii=False)
    print(markdown_table(
        ["corpus", "clips:", "index", "recall@10 all / held-out", "without rerank:"],
        [[r["corpus"], r["clips"], f"{r['factory']} nprobe={r['search_params'].get('nprobe')}",
          f"{r['recall_at_10']} / {r['recall_at_10_held_out']}",
          r["recall_at_10_without_rerank"]] for r in rows],
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
