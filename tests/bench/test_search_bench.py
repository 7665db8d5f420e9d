"""bench/search.py --quick end to end: a real 20k-clip index, `atri serve` and the numpy
baseline on loopback, the floor and recall; then the JSON it writes, and that it left
no server and no temp dir behind."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1200  # corpus embedding, two servers loading, ~25 s of load on 2 busy cores


def run_quick(corpus: Path, out: Path, work: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "search.py"), "--quick", "--corpus", str(corpus),
           "--work", str(work), "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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


@pytest.mark.slow
def test_quick_run_writes_results(tiny_corpus: Path, tmp_path: Path) -> None:
    out, work = tmp_path / "search.json", tmp_path / "work"
    work.mkdir()
    done = run_quick(tiny_corpus, out, work)
    assert done.returncode == 0, done.stdout[-3000:]
    result = json.loads(out.read_text())

    assert result["command"].startswith("python bench/search.py --quick")
    assert result["machine"]["uptime_before"] and result["machine"]["uptime_after"]
    assert result["cache"]["defeated"] is True
    corpus = result["corpus"]
    assert corpus["real_clips"] > 0 and corpus["queries"] > corpus["held_out_queries"] > 0
    assert set(corpus["queries_by_lang"]) == set("eng fra deu spa nld cat jpn zho".split())

    [size] = result["sizes"]
    assert size["n"] == 20_000
    assert size["factory"] == "Flat" and size["search_params"] == {}  # exact up to 200k
    assert size["recall_at_10"] == 1.0 and size["recall_at_10_held_out"] == 1.0
    floor = size["floor"]
    assert floor["queries"] > 0
    assert 0 < floor["encode_p50_ms"] <= floor["p99_ms"]
    assert 0 < floor["search_p50_ms"] <= floor["p99_ms"]
    assert floor["numpy_scan_p50_ms"] > 0
    assert floor["search_speedup"] == pytest.approx(
        floor["numpy_scan_p50_ms"] / floor["search_p50_ms"], abs=0.01
    )
    for name in ("atri", "baseline"):
        for phase, clients in (("latency", 1), ("throughput", 2)):
            load = size[f"{name}_{phase}"]
            assert load["clients"] == clients
            assert load["requests_ok"] > 0 and load["requests_failed"] == 0, load
            assert set(load["statuses"]) == {"200"}
            assert 0 < load["p50_ms"] <= load["p95_ms"] <= load["p99_ms"]
            assert load["qps"] > 0 and load["seconds"] > 0
        sent = size["distinct_queries_sent"][name]
        ok = size[f"{name}_latency"]["requests_ok"] + size[f"{name}_throughput"]["requests_ok"]
        assert ok == sent <= corpus["queries"]  # every query at most once: the cache never hits
        assert port_closed(size["ports"][name])  # the server was stopped
    goals = size["goals"]
    assert goals["recall_at_10"]["met"] is True
    assert goals["speedup_p50"]["applies"] is False
    assert goals["p50_over_floor"]["value"] == pytest.approx(
        size["atri_latency"]["p50_ms"] / floor["p50_ms"], abs=1e-3
    )
    assert "| 20,000 | Flat |" in done.stdout
    assert list(work.iterdir()) == []  # indices, checkpoint and logs removed
