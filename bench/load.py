"""Load and backpressure: concurrent clients against a real `atri serve` (uvicorn) on a
loopback port, mixing text search, audio search and consistency requests drawn from the
index's own captions and audio, for a bounded time and number of requests.

    .venv/bin/python bench/load.py --index data/index-small --out bench/results/load.json

Without --url it starts `atri serve --index DIR` on a free loopback port (server
settings through --env KEY=VALUE, e.g. --env ATRI_MAX_HEAVY_REQUESTS=4) and stops it at
the end; an --index that does not exist yet is built first from --manifest with
--checkpoint. --url targets a server already running on this machine (loopback only).

Every answer is classified: 200 is ok; 503 with the error code `busy` is backpressure (the
service refusing work it cannot start within ATRI_REQUEST_TIMEOUT_S), counted apart;
anything else, or no answer, is an error. Latency percentiles are over the ok answers.
Prints a table, writes JSON, and exits 1 if there was any error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from _results import write_json
from harness import Server, atri_serve, free_port

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ENDPOINTS = ("/search", "/search/audio", "/consistency")
READY_TIMEOUT_S = 300.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path, required=True, help="index directory (served, and read)")
    p.add_argument(
        "--manifest",
        type=Path,
        default=Path("data/corpus-small/test.jsonl"),
        help="clips to index when --index does not exist yet",
    )
    p.add_argument("--checkpoint", default="default", help="checkpoint for building the index")
    p.add_argument("--url", help="a running server on this machine (default: start one)")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the started server")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to send requests")
    p.add_argument("--max-requests", type=int, default=100_000, help="stop after this many")
    p.add_argument(
        "--mix",
        default="search=6,audio=2,consistency=2",
        help="relative weights of /search, /search/audio and /consistency",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="client timeout per request, s")
    p.add_argument("--audio-clips", type=int, default=16, help="distinct clips uploaded")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    return p


# --- the server ------------------------------------------------------------------------


def build_index(index: Path, manifest: Path, checkpoint: str) -> None:
    atri = Path(sys.executable).with_name("atri")  # the console script beside this python
    cmd = [str(atri), "index", "build", "--checkpoint", checkpoint,
           "--manifest", str(manifest), "--out", str(index)]  # fmt: skip
    print("building the index:", shlex.join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, timeout=3600)


@contextmanager
def started_server(index: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """`atri serve` on a free loopback port until the block ends; yields its URL."""
    port = free_port()
    with Server("atri serve", atri_serve(index, port), port, {**os.environ, **env}, log) as server:
        try:
            server.wait_ready(READY_TIMEOUT_S)
        except RuntimeError as exc:
            raise SystemExit(f"{exc}\n(log: {log})") from exc
        yield server.url


# --- the workload ---------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Requests drawn from the index itself: captions as text queries (and as the
    parallel queries of /consistency), clips' audio files as uploads."""

    captions: list[tuple[str, str]]  # (lang, text)
    clip_ids: list[str]
    audio: list[tuple[str, bytes]]  # (file name, bytes)

    @classmethod
    def from_index(cls, index: Path, n_audio: int, rng: np.random.Generator) -> Workload:
        from atri.index.store import IndexStore

        store = IndexStore.open(index)
        try:
            ids = store.ids()
            records = [store.record(i) for i in ids]
        finally:
            store.close()
        captions = [
            (lang, text)
            for r in records
            if r
            for lang, texts in r.captions.items()
            for text in texts
        ]
        audio = []
        for j in rng.permutation(len(records))[:n_audio]:
            path = Path(records[j].audio)
            audio.append((path.name, path.read_bytes()))
        with_captions = [r.id for r in records if r and r.captions]
        return cls(captions, with_captions, audio)

    def request(self, endpoint: str, rng: np.random.Generator) -> dict:
        """httpx.request keyword arguments for one request to `endpoint`."""
        if endpoint == "/search":
            lang, text = self.captions[rng.integers(len(self.captions))]
            params = {"q": text, "k": 10}
            if rng.random() < 0.8:  # else: the language is detected
                params["lang"] = lang
            return {"method": "GET", "url": "/search", "params": params}
        if endpoint == "/search/audio":
            name, data = self.audio[rng.integers(len(self.audio))]
            lang = self.captions[rng.integers(len(self.captions))][0]
            return {
                "method": "POST",
                "url": "/search/audio",
                "files": {"file": (name, data)},
                "data": {"lang": lang, "k": "10"},
            }
        clip_id = self.clip_ids[rng.integers(len(self.clip_ids))]
        body = {"clip_id": clip_id, "caption_index": 0, "k": 10}
        return {"method": "POST", "url": "/consistency", "json": body}


# --- running it ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    endpoint: str
    status: int  # 0: no answer
    code: str  # "ok", "busy", an error code, or the transport error's type
    seconds: float


async def run_load(
    url: str, workload: Workload, mix: dict[str, float], args: argparse.Namespace
) -> tuple[list[Outcome], float]:
    """`args.clients` clients send requests until `args.seconds` pass or
    `args.max_requests` were sent; (outcomes, wall seconds)."""
    endpoints = list(mix)
    weights = np.array([mix[e] for e in endpoints]) / sum(mix.values())
    outcomes: list[Outcome] = []
    started = time.monotonic()
    deadline = started + args.seconds
    sent = 0
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as client:

        async def one_client(index: int) -> None:
            nonlocal sent
            rng = np.random.default_rng([args.seed, index])
            while time.monotonic() < deadline and sent < args.max_requests:
                sent += 1
                endpoint = endpoints[rng.choice(len(endpoints), p=weights)]
                outcomes.append(await send(client, endpoint, workload.request(endpoint, rng)))

        await asyncio.gather(*(one_client(i) for i in range(args.clients)))
    return outcomes, time.monotonic() - started


async def send(client: httpx.AsyncClient, endpoint: str, request: dict) -> Outcome:
    t0 = time.perf_counter()
    try:
        response = await client.request(**request)
    except httpx.HTTPError as exc:
        return Outcome(endpoint, 0, type(exc).__name__, time.perf_counter() - t0)
    elapsed = time.perf_counter() - t0
    if response.status_code == 200:
        return Outcome(endpoint, 200, "ok", elapsed)
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "no_error_body"
    return Outcome(endpoint, response.status_code, code, elapsed)


def summarise(outcomes: list[Outcome], wall: float) -> dict:
    per = {}
    for endpoint in ENDPOINTS:
        mine = [o for o in outcomes if o.endpoint == endpoint]
        ok = np.array([o.seconds for o in mine if o.code == "ok"]) * 1000
        busy = [o for o in mine if o.status == 503 and o.code == "busy"]
        per[endpoint] = {
            "requests": len(mine),
            "ok": int(len(ok)),
            "busy_503": len(busy),
            "errors": len(mine) - len(ok) - len(busy),
            "rps": round(len(mine) / wall, 2),
            **{
                f"p{q}_ms": round(float(np.percentile(ok, q)), 1) if len(ok) else None
                for q in (50, 90, 99)
            },
            "max_ms": round(float(ok.max()), 1) if len(ok) else None,
            # how fast the refusals come: about ATRI_REQUEST_TIMEOUT_S, not a queue's length
            "busy_p50_ms": round(float(np.median([o.seconds for o in busy])) * 1000, 1)
            if busy
            else None,
        }
    errors = [o for o in outcomes if o.code not in ("ok", "busy")]
    return {
        "requests": len(outcomes),
        "ok": sum(p["ok"] for p in per.values()),
        "busy_503": sum(p["busy_503"] for p in per.values()),
        "errors": len(errors),
        "throughput_rps": round(len(outcomes) / wall, 2),
        "endpoints": per,
        "error_samples": [o.__dict__ for o in errors[:20]],
    }


def table(result: dict) -> str:
    head = (f"{'endpoint':<15}{'requests':>9}{'ok':>7}{'busy503':>8}{'errors':>7}"
            f"{'req/s':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for endpoint, p in result["endpoints"].items():
        cells = [
            p[k] if p[k] is not None else "-" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")
        ]
        lines.append(
            f"{endpoint:<15}{p['requests']:>9}{p['ok']:>7}{p['busy_503']:>8}{p['errors']:>7}"
            f"{p['rps']:>7}" + "".join(f"{c:>9}" for c in cells)
        )
    lines.append(
        f"{result['clients']} clients, {result['wall_s']} s: {result['requests']} requests "
        f"({result['throughput_rps']} req/s), {result['busy_503']} busy 503, "
        f"{result['errors']} errors"
    )
    return "\n".join(lines)


def parse_mix(text: str) -> dict[str, float]:
    names = {"search": "/search", "audio": "/search/audio", "consistency": "/consistency"}
    mix = {}
    for item in text.split(","):
        name, _, weight = item.partition("=")
        if name.strip() not in names:
            raise SystemExit(f"--mix: unknown endpoint {name!r} (search, audio, consistency)")
        mix[names[name.strip()]] = float(weight)
    return {e: w for e, w in mix.items() if w > 0}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.max_requests < 1:
        raise SystemExit("--clients, --seconds and --max-requests must be positive")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit(f"--url {args.url}: only a server on this machine (loopback) is loaded")
    mix = parse_mix(args.mix)
    env = dict(item.split("=", 1) for item in args.env)
    if not (args.index / "CURRENT").is_file():
        build_index(args.index, args.manifest, args.checkpoint)
    rng = np.random.default_rng(args.seed)
    workload = Workload.from_index(args.index, args.audio_clips, rng)
    log = Path(tempfile.gettempdir()) / f"atri-load-{os.getpid()}.log"
    with started_server(args.index, env, log) if not args.url else _given(args.url) as url:
        health = httpx.get(f"{url}/health", timeout=10).json()
        load_before = os.getloadavg()
        outcomes, wall = asyncio.run(run_load(url, workload, mix, args))
        load_after = os.getloadavg()
    result = {
        "command": "python bench/load.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
        },
        "server": {
            "url": url,
            "started_here": not args.url,
            "log": None if args.url else str(log),
            "env": env,
            "index": str(args.index),
            "index_size": health.get("index_size"),
            "model": health.get("model"),
        },
        "clients": args.clients,
        "seconds": args.seconds,
        "wall_s": round(wall, 2),
        "mix": mix,
        **summarise(outcomes, wall),
    }
    print(table(result))
    if args.out:
        write_json(args.out, result)
    return 1 if result["errors"] else 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.rstrip("/")


if __name__ == "__main__":
    sys.exit(main())
