"""The naive baseline of bench/search.py: FastAPI + a numpy flat scan.

    python bench/_numpy_baseline.py --index INDEX_DIR --checkpoint C --port P

It loads the clip vectors of the index's current version (vectors.npy, float16) into
memory as float32, the same checkpoint as the service, and answers
`GET /search?q=&lang=&k=` with the exact top k: the query embedded by the model's
`embed_text` (under a lock, as the service does), scores `V @ q` over every clip, and
`np.argpartition` for the top k. No FAISS, no records, no cache. `/health` answers 503
until loaded.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np


def load(index: Path, checkpoint: str) -> tuple[object, np.ndarray, list[str]]:

    from atri.commands.common import apply_thread_settings
    from atri.index import layout
    from atri.training.encoders.checkpoint import load_checkpoint

    apply_thread_settings()  # ATRI_THREADS, as the atri commands read it
    folder = layout.version_dir(index, layout.require_current(index))
    vectors = np.load(folder / "vectors.npy").astype(np.float32)  # (N, E)
    ids = (folder / "ids.txt").read_text(encoding="utf-8").splitlines()
    model, _ = load_checkpoint(checkpoint)
    return model, vectors, ids


def top_k(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k best rows, best first; all scores) of `vectors` (N, E) against `query` (E,)."""
    scores = vectors @ query  # (N,)
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])], scores


def create_app(index: Path, checkpoint: str):  # noqa: ANN201 (FastAPI)
    import torch
    from fastapi import FastAPI, HTTPException, Query

    app = FastAPI(title="numpy flat-scan baseline")
    state: dict = {}
    lock = threading.Lock()

    def loader() -> None:
        state["model"], state["vectors"], state["ids"] = load(index, checkpoint)

    threading.Thread(target=loader, daemon=True).start()

    @app.get("/health")
    def health() -> dict:
        if "ids" not in state:
            raise HTTPException(503, "loading")
        return {"status": "ok", "index_size": len(state["ids"])}

    @app.get("/search")
    def search(q: str = Query(min_length=1), lang: str = "eng", k: int = 10) -> dict:
        if "ids" not in state:
            raise HTTPException(503, "loading")
        started = time.perf_counter()
        with lock, torch.inference_mode():
            query = state["model"].embed_text([q], lang)[0].float().numpy()  # (E,)
        top, scores = top_k(state["vectors"], query, k)
        return {
            "query": q,
            "lang": lang,
            "k": k,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
            "results": [
                {"rank": r, "id": state["ids"][i], "score": round(float(scores[i]), 6)}
                for r, i in enumerate(top.tolist(), start=1)
            ],
        }

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    app = create_app(args.index.resolve(), args.checkpoint)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
