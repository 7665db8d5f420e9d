"""bench/train_cost.py: the --quick run, one fresh process per (setting, strategy)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train_cost():
    """bench/ is not a package: load the script as a module, its folder on sys.path (where
    its helpers are) as when it runs as a script."""
    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("train_cost", REPO / "bench" / "train_cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_cost"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(train_cost, tmp_path: Path, settings: str) -> dict:
    out = tmp_path / "train_cost.json"
    argv = ["--quick", "--strategies", "mlclap,kcl", "--settings", settings, "--out", str(out)]
    assert train_cost.main(argv) == 0
    return json.loads(out.read_text())


def _check_runs(result: dict, setting: str, batch: int, k: int) -> None:
    runs = {r["strategy"]: r for r in result["runs"] if r["setting"] == setting}
    assert set(runs) == {"mlclap", "kcl"}
    for run in runs.values():
        assert run["steps"] >= 2 and 0 < run["step_ms_min"] <= run["step_ms_median"]
        assert run["step_ms_median"] <= run["step_ms_max"]
        assert run["peak_rss_mb"] >= run["rss_setup_mb"] > 100  # torch alone is ~200 MB
        assert run["step_rss_mb"] == pytest.approx(run["peak_rss_mb"] - run["rss_setup_mb"],
                                                   abs=0.11)
        assert run["peak_reset"] is True
        assert math.isfinite(run["loss_first"]) and math.isfinite(run["loss_last"])
    # mlclap pairs each clip with one caption, KCL with all K of them
    assert runs["mlclap"]["texts_per_step"] == batch
    assert runs["kcl"]["texts_per_step"] == batch * k
    assert runs["kcl"]["saved_activations_mb"] > runs["mlclap"]["saved_activations_mb"] > 0
    assert result["ratios"][setting]["mlclap"] == {key: 1.0 for key in
                                                   ("step_ms_median", "peak_rss_mb",
                                                    "step_rss_mb", "saved_activations_mb",
                                                    "saved_peak_mb")}


def test_quick_cached(train_cost, tmp_path: Path) -> None:
    result = _run(train_cost, tmp_path, "cached")
    assert (result["batch_size"], result["k"], result["settings"]) == (8, 8, ["cached"])
    assert result["command"].startswith("python bench/train_cost.py --quick")
    assert set(result["machine"]) >= {"cpu", "cores", "threads", "loadavg_before"}
    assert result["paper"]["ratios"]["kcl"]["gpu_memory_gb"] == pytest.approx(3.08)
    assert result["text_tower"] is None
    _check_runs(result, "cached", 8, 8)
    run = result["runs"][0]
    assert run["trainable_params_m"] == pytest.approx(  # the two heads and tau only
        (512 * 512 + 512 + 512 * 512 + 512 + 384 * 512 + 512 + 512 * 512 + 512 + 1) / 1e6,
        abs=0.01)


@pytest.mark.slow
def test_quick_trainable_text(train_cost, tmp_path: Path) -> None:
    result = _run(train_cost, tmp_path, "text")
    tower = result["text_tower"]
    assert (tower["layers"], tower["hidden"]) == (2, 64)
    assert set(tower["tokens_per_caption"]) == {"eng", "fra", "deu", "spa", "nld", "cat",
                                                "jpn", "zho"}
    assert all(5 < n < 60 for n in tower["tokens_per_caption"].values())
    _check_runs(result, "text", 8, 8)
    runs = {r["strategy"]: r for r in result["runs"]}
    assert runs["kcl"]["trainable_params_m"] > 1  # the tower trains
    # eight times the captions through the tower: several times the activations
    assert runs["kcl"]["saved_activations_mb"] > 4 * runs["mlclap"]["saved_activations_mb"]


@pytest.mark.slow
def test_quick_grad_cache(train_cost, tmp_path: Path) -> None:
    """GradCache holds one chunk (B captions) of activations at a time: KCL's peak of saved
    activations falls to about ML-CLAP's, while it saves as much in all."""
    out = tmp_path / "train_cost.json"
    argv = ["--quick", "--strategies", "mlclap,kcl", "--settings", "text,text-gc",
            "--out", str(out)]
    assert train_cost.main(argv) == 0
    result = json.loads(out.read_text())
    runs = {(r["setting"], r["strategy"]): r for r in result["runs"]}
    plain, cached = runs["text", "kcl"], runs["text-gc", "kcl"]
    assert cached["texts_per_step"] == plain["texts_per_step"] == 64
    assert cached["saved_peak_mb"] < plain["saved_peak_mb"] / 3
    assert cached["saved_peak_mb"] < 2 * runs["text", "mlclap"]["saved_peak_mb"]
    assert math.isclose(cached["loss_first"], plain["loss_first"], rel_tol=1e-5)
    # ratios of the GradCache setting are to the plain mlclap step
    assert result["ratios"]["text-gc"]["kcl"]["peak_rss_mb"] == pytest.approx(
        cached["peak_rss_mb"] / runs["text", "mlclap"]["peak_rss_mb"], abs=0.01)
