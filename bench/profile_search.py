"""Where a /search request spends its CPU inside `atri serve`'s process: yappi (every
thread, CPU clock) over N requests at one client through FastAPI's TestClient, the
service built as `atri serve` builds it. Prints the top functions by total time.

    .venv/bin/pip install yappi   # not a project dependency
    atri index build --checkpoint default --manifest data/corpus-sfx-v4/val.jsonl \
        --out /tmp/prof/idx
    .venv/bin/python bench/profile_search.py /tmp/prof/idx --requests 300

docs/benchmarks.md (issue 14, the quiet run) reads the rows of `solve_dependencies`,
`run_in_threadpool` and FastAPI's request handler (`fastapi/routing.py ... app`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)

    import yappi
    from fastapi.testclient import TestClient
    from harness import wait_until

    from atri.service.app import create_app
    from atri.service.settings import Settings

    app = create_app(Settings(index_dir=args.index, threads=1))
    queries = [f"dog barking number {i}" for i in range(args.requests + 30)]
    with TestClient(app) as client:
        # the index loads in the background
        wait_until(lambda: client.get("/health").status_code == 200, "the service to load", 120)
        for q in queries[:30]:  # warm-up, distinct from the measured queries
            client.get("/search", params={"q": q + " warm", "lang": "eng", "k": 10})
        yappi.set_clock_type("cpu")
        yappi.start()
        started = time.perf_counter()
        for q in queries[30:]:
            response = client.get("/search", params={"q": q, "lang": "eng", "k": 10})
            response.raise_for_status()
        yappi.stop()
        wall = (time.perf_counter() - started) / args.requests * 1000
    print(f"{args.requests} requests, {wall:.1f} ms each (wall, client included)")
    stats = yappi.get_func_stats()
    stats.sort("ttot")
    stats.print_all(out=sys.stdout, columns={0: ("name", 90), 1: ("ncall", 9),
                                             3: ("ttot", 9), 4: ("tavg", 9)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
