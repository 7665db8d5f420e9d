"""Helpers of bench/search.py: the goals (recorded, never asserted) and the results table.

Every comparison is against the naive baseline's better thread setting, metric by metric
(its lowest p50 and p95, its highest QPS, its lowest peak RSS), as issue 14 asks."""

from __future__ import annotations

from _results import markdown_table

GOALS = {
    "faster_everywhere": True,  # p50 and p95 at 1 client, QPS at every client count
    "speedup_min": 5.0,  # baseline p50 / atri p50 at one client ...
    "speedup_at_n": 1_000_000,  # ... at this many clips
    "p50_over_floor_max": 1.3,  # atri p50 at one client / in-process encode + search
    "recall_min": 0.95,  # recall@10 against exact search
    "qps_min": 100.0,  # at 8 clients ...
    "qps_clients": 8,
    "qps_at_n": [100_000, 1_000_000],  # ... at these sizes
    "rss_ratio_max": 1.2,  # atri peak RSS / the baseline's, at speedup_at_n
}


def baselines(size: dict) -> list[dict]:
    return [s for name, s in size["servers"].items() if name != "atri"]


def best_baseline(size: dict, clients: int) -> dict:
    """The baselines' best p50, p95, p99 and QPS at `clients` (lowest, lowest, highest)."""
    loads = [b["clients"][str(clients)] for b in baselines(size)]
    ok = [x for x in loads if x["p50_ms"] is not None]
    return {
        "p50_ms": min((x["p50_ms"] for x in ok), default=None),
        "p95_ms": min((x["p95_ms"] for x in ok), default=None),
        "p99_ms": min((x["p99_ms"] for x in ok), default=None),
        "qps": max((x["qps"] for x in ok if x["qps"]), default=None),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def goals(size: dict) -> dict:
    """Each goal of issue 14 for one size: its value, its bound and whether it is met
    (`applies` false where the issue sets it at other sizes only)."""
    atri = size["servers"]["atri"]
    counts = sorted(int(c) for c in atri["clients"])
    one = atri["clients"]["1"]
    base1 = best_baseline(size, 1)
    recalls = [r for r in (size["recall_at_10"], size["recall_at_10_held_out"]) if r is not None]
    low = min(recalls) if recalls else None
    speedup = _ratio(base1["p50_ms"], one["p50_ms"])
    over_floor = _ratio(one["p50_ms"], size["floor"]["p50_ms"])
    qps_ratios = {
        str(c): _ratio(atri["clients"][str(c)]["qps"], best_baseline(size, c)["qps"])
        for c in counts
    }
    faster = {
        "p50": speedup,
        "p95": _ratio(base1["p95_ms"], one["p95_ms"]),
        **{f"qps_{c}": r for c, r in qps_ratios.items()},
    }
    qps_at = atri["clients"].get(str(GOALS["qps_clients"]), {}).get("qps")
    rss = _ratio(atri["peak_rss_mb"], min(b["peak_rss_mb"] or 0 for b in baselines(size)))
    big = size["n"] >= GOALS["speedup_at_n"]
    return {
        "faster_than_baseline": {
            "ratios": faster,
            "met": all(r is not None and r > 1 for r in faster.values()),
        },
        "speedup_p50": {
            "value": speedup,
            "min": GOALS["speedup_min"],
            "applies": big,
            "met": speedup is not None and speedup >= GOALS["speedup_min"],
        },
        "p50_over_floor": {
            "value": over_floor,
            "max": GOALS["p50_over_floor_max"],
            "met": over_floor is not None and over_floor <= GOALS["p50_over_floor_max"],
        },
        "recall_at_10": {
            "value": low,
            "min": GOALS["recall_min"],
            "met": low is not None and low >= GOALS["recall_min"],
        },
        "qps": {
            "value": qps_at,
            "clients": GOALS["qps_clients"],
            "min": GOALS["qps_min"],
            "applies": size["n"] in GOALS["qps_at_n"],
            "met": qps_at is not None and qps_at >= GOALS["qps_min"],
        },
        "peak_rss_ratio": {
            "value": rss,
            "max": GOALS["rss_ratio_max"],
            "applies": big,
            "met": rss is not None and rss <= GOALS["rss_ratio_max"],
        },
        # index search alone against the numpy scan, in-process: no text encoder in it
        "search_speedup": size["floor"]["search_speedup"],
    }


def _latency(load: dict) -> str:
    return f"{load['p50_ms']} / {load['p95_ms']} / {load['p99_ms']}"


def table(sizes: list[dict]) -> str:
    """One row per size and client count: latency p50 / p95 / p99 ms (client-side) and
    QPS of atri and of the baselines' best; the size's index, recall, floor and peak RSS
    on its first row."""
    columns = ["clips:", "index", "recall@10 all / held-out", "floor p50 ms:", "clients:",
               "atri ms", "naive ms (best)", "p50 naive / atri:", "QPS atri / naive:",
               "peak RSS MB atri / naive"]  # fmt: skip
    rows = []
    for s in sizes:
        atri = s["servers"]["atri"]
        index = s["factory"] + "".join(f" {k}={v}" for k, v in s["search_params"].items())
        if s.get("rerank"):
            index += f" rerank={s['rerank']}"
        rss = f"{atri['peak_rss_mb']} / " + " ".join(
            str(b["peak_rss_mb"]) for b in baselines(s)
        )
        for i, c in enumerate(sorted(int(c) for c in atri["clients"])):
            ours, best = atri["clients"][str(c)], best_baseline(s, c)
            first = i == 0
            rows.append([
                f"{s['n']:,}" if first else "",
                index if first else "",
                f"{s['recall_at_10']} / {s['recall_at_10_held_out']}" if first else "",
                s["floor"]["p50_ms"] if first else "",
                c,
                _latency(ours),
                _latency(best),
                _ratio(best["p50_ms"], ours["p50_ms"]),
                f"{ours['qps']} / {best['qps']}",
                rss if first else "",
            ])  # fmt: skip
    return markdown_table(columns, rows)
