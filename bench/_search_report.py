"""Helpers of bench/search.py: the goals (recorded, never asserted) and the results table."""

from __future__ import annotations

from _results import markdown_table

GOALS = {
    "p50_over_floor_max": 1.2,  # service p50 at one client / in-process encode + search
    "speedup_min": 5.0,  # baseline p50 / service p50 ...
    "speedup_at_n": 1_000_000,  # ... at this many clips
    "recall_min": 0.95,  # recall@10 against exact search
}


def goals(size: dict) -> dict:
    """The goals of one size: p50 within 1.2x the floor, >= 5x faster than the baseline at
    1M (p50 at one client; the QPS ratio is reported beside it), recall@10 >= 0.95 (the
    lower of all-query and held-out recall)."""
    ours, base = size["atri_latency"]["p50_ms"], size["baseline_latency"]["p50_ms"]
    floor = size["floor"]["p50_ms"]
    ratio = round(ours / floor, 3) if ours and floor else None
    speedup = round(base / ours, 2) if ours and base else None
    qa, qb = size["atri_throughput"]["qps"], size["baseline_throughput"]["qps"]
    recalls = [r for r in (size["recall_at_10"], size["recall_at_10_held_out"]) if r is not None]
    low = min(recalls) if recalls else None
    return {
        "p50_over_floor": {
            "value": ratio,
            "max": GOALS["p50_over_floor_max"],
            "met": ratio is not None and ratio <= GOALS["p50_over_floor_max"],
        },
        "speedup_p50": {
            "value": speedup,
            "min": GOALS["speedup_min"],
            "applies": size["n"] >= GOALS["speedup_at_n"],
            "met": speedup is not None and speedup >= GOALS["speedup_min"],
        },
        "qps_ratio": round(qa / qb, 2) if qa and qb else None,
        # index search alone against the numpy scan, in-process: no text encoder in it
        "search_speedup": size["floor"]["search_speedup"],
        "recall_at_10": {
            "value": low,
            "min": GOALS["recall_min"],
            "met": low is not None and low >= GOALS["recall_min"],
        },
    }


def table(sizes: list[dict]) -> str:
    """Latencies are p50 / p95 / p99 ms at one client; QPS at --clients."""
    columns = ["clips:", "index", "recall@10 all / held-out", "encode p50 ms:",
               "search p50 ms: index / numpy scan", "floor p50 ms:", "atri ms", "baseline ms",
               "atri p50 / floor:", "baseline p50 / atri p50:", "QPS atri / baseline"]  # fmt: skip
    rows = []
    for s in sizes:
        a, b, f, g = s["atri_latency"], s["baseline_latency"], s["floor"], s["goals"]
        qps = s["atri_throughput"], s["baseline_throughput"]
        rows.append([
            f"{s['n']:,}",
            s["factory"] + "".join(f" {k}={v}" for k, v in s["search_params"].items()),
            f"{s['recall_at_10']} / {s['recall_at_10_held_out']}",
            f["encode_p50_ms"],
            f"{f['search_p50_ms']} / {f['numpy_scan_p50_ms']}",
            f["p50_ms"],
            f"{a['p50_ms']} / {a['p95_ms']} / {a['p99_ms']}",
            f"{b['p50_ms']} / {b['p95_ms']} / {b['p99_ms']}",
            g["p50_over_floor"]["value"],
            g["speedup_p50"]["value"],
            f"{qps[0]['qps']} / {qps[1]['qps']} ({qps[0]['clients']} clients)",
        ])
    return markdown_table(columns, rows)
