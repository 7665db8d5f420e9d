"""bench/search.py --quick end to end: a real 20k-clip index, `atri serve` and the numpy
baseline on loopback, the floor and recall; then the JSON it writes, and that it left
no server and no temp dir behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1200  # corpus embedding, two servers loading, ~20 s of load on 2 busy cores


def run_quick(corpus: Path, out: Path, work: Path, cache: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "search.py"), "--quick", "--corpus", str(corpus),
           "--work", str(work), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}  # its feature caches, not the user's
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        stdout, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the bench stops its servers on SIGTERM
        stdout, _ = proc.communicate(timeout=60)
        pytest.fail(f"bench/search.py --quick took over {TIMEOUT_S} s:\n{stdout.decode()[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout.decode(errors="replace"))


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_quick_run_writes_results(tiny_corpus: Path, tmp_path: Path) -> None:
    out, work = tmp_path / "search.json", tmp_path / "work"
    work.mkdir()
    done = run_quick(tiny_corpus, out, work, tmp_path / "cache")
    assert done.returncode == 0, done.stdout[-3000:]
    result = json.loads(out.read_text())

    assert result["command"].startswith("python bench/search.py --quick")
    assert result["machine"]["uptime_before"] and result["machine"]["uptime_after"]
    assert result["cache"]["defeated"] is True
    corpus = result["corpus"]
    assert corpus["real_clips"] > 0 and corpus["caption_queries"] > corpus["held_out_queries"] > 0
    assert set(corpus["queries_by_lang"]) == set("eng fra deu spa nld cat jpn zho".split())

    [size] = result["sizes"]
    assert size["n"] == 20_000
    assert size["factory"] == "Flat" and size["search_params"] == {}  # exact up to 20k
    assert size["recall_at_10"] == 1.0 and size["recall_at_10_held_out"] == 1.0
    floor = size["floor"]
    assert floor["queries"] > 0
    assert 0 < floor["encode_p50_ms"] <= floor["p99_ms"]
    assert 0 < floor["search_p50_ms"] <= floor["p99_ms"]
    assert floor["numpy_scan_p50_ms"] > 0
    assert floor["search_speedup"] == pytest.approx(
        floor["numpy_scan_p50_ms"] / floor["search_p50_ms"], abs=0.01
    )
    assert set(size["servers"]) == {"atri", "numpy-1t"}
    for name, server in size["servers"].items():
        assert server["peak_rss_mb"] > 0
        assert set(server["clients"]) == {"1", "4"}
        for clients, load in server["clients"].items():
            assert load["clients"] == int(clients)
            assert load["requests_ok"] > 0 and load["requests_failed"] == 0, load
            assert set(load["statuses"]) == {"200"}
            assert 0 < load["p50_ms"] <= load["p95_ms"] <= load["p99_ms"]
            assert load["qps"] > 0 and load["seconds"] > 0
        sent = size["distinct_queries_sent"][name]
        ok = sum(load["requests_ok"] for load in server["clients"].values())
        assert ok == sent <= corpus["queries"]  # every query at most once: the cache never hits
        assert port_closed(size["ports"][name])  # the server was stopped
    goals = size["goals"]
    assert goals["recall_at_10"]["met"] is True
    assert goals["speedup_p50"]["applies"] is False and goals["qps"]["applies"] is False
    atri_p50 = size["servers"]["atri"]["clients"]["1"]["p50_ms"]
    assert goals["p50_over_floor"]["value"] == pytest.approx(atri_p50 / floor["p50_ms"], abs=0.01)
    assert set(goals["faster_than_baseline"]["ratios"]) == {"p50", "p95", "qps_1", "qps_4"}
    assert "| 20,000 | Flat |" in done.stdout
    assert list(work.iterdir()) == []  # indices, checkpoint and logs removed
