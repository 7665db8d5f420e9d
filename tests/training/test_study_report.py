"""summarise and render_markdown on synthetic runs: the numbers are those of the
statistics functions applied by hand, and a zero-variance arm reads n/a."""

import numpy as np
import pytest

from atri.training.evaluation.study_report import METRICS, render_markdown, summarise
from atri.training.evaluation.study_stats import cluster_bootstrap, welch

LANGS = ["eng", "fra"]


def fake_run(rng, seed: int, shift: float, exact: float | None = None) -> dict:
    """One run's evaluation on one split: 10 clips in 4 units, 2 captions each."""
    r1 = exact if exact is not None else 40 + shift + rng.normal()
    metrics = {
        "languages": LANGS,
        "t2a": {x: {"R@1": r1, "R@5": 80.0} for x in [*LANGS, "avg"]},
        "a2t": {x: {"R@1": r1 + 1, "R@5": 81.0} for x in [*LANGS, "avg"]},
        "mrv_var": {"t2a": 5.0 - shift + rng.normal(), "a2t": 4.0},
        "gap": {"avg": 0.2}, "dis": {"avg": 0.4},
        "agree_t2a": 50.0, "agree_a2t": 60.0, "logvar_t2a": 0.1, "logvar_a2t": 0.2,
    }
    units = np.repeat([0, 1, 2, 3], [3, 3, 2, 2])
    arrays = {name: rng.random(20 if "t2a" in name else 10) + shift
              for _, name, _ in METRICS.values() if name}
    arrays |= {"units_t2a": np.repeat(units, 2), "units_a2t": units}
    train = {"epochs_budget": 4, "epochs_run": 3, "best_epoch": 2, "steps_best": 10,
             "caption_updates_best": 80, "audio_passes_best": 2.0, "epoch_seconds": 0.5,
             "peak_rss_mb": 400.0, "early_stopped": True, "curve": []}
    return {"seed": seed, "command": f"atri train --seed {seed}",
            "metrics": {"test-unseen": metrics}, "arrays": {"test-unseen": arrays},
            "train": train}


@pytest.fixture
def raw():
    rng = np.random.default_rng(0)
    return {"corpus": "c", "splits": ["test-unseen"], "arms": {
        "mlclap": [fake_run(rng, s, 0.0) for s in range(3)],
        "kcl": [fake_run(rng, s, 2.0) for s in range(3)],
        "cacl": [fake_run(rng, s, 0.0, exact=41.0) for s in range(3)],
    }}


def test_summary_numbers_are_the_statistics_applied_by_hand(raw):
    out = summarise(raw, n_bootstrap=300)
    kcl = out["splits"]["test-unseen"]["kcl"]["t2a_R@1"]
    ours = [r["metrics"]["test-unseen"]["t2a"]["avg"]["R@1"] for r in raw["arms"]["kcl"]]
    ref = [r["metrics"]["test-unseen"]["t2a"]["avg"]["R@1"] for r in raw["arms"]["mlclap"]]
    w = welch(ours, ref)
    assert kcl["welch"] == {"diff": w.diff, "t": w.t, "df": w.df, "low": w.low, "high": w.high}
    diff = (np.mean([r["arrays"]["test-unseen"]["t2a_R@1"] for r in raw["arms"]["kcl"]], 0)
            - np.mean([r["arrays"]["test-unseen"]["t2a_R@1"] for r in raw["arms"]["mlclap"]], 0))
    units = raw["arms"]["kcl"][0]["arrays"]["test-unseen"]["units_t2a"]
    assert kcl["bootstrap"] == list(cluster_bootstrap(diff, units, n=300))
    assert out["baselines"] == {"mlclap": None, "kcl": "mlclap", "cacl": "mlclap"}
    assert "welch" not in out["splits"]["test-unseen"]["mlclap"]["t2a_R@1"]


def test_zero_variance_arm_reads_na_and_tables_cover_the_split(raw):
    summary = {"seeds": [0, 1, 2], "epochs": 4, "patience": 1, "batch_size": 24,
               "corpora": {"c": summarise(raw, n_bootstrap=50),
                           "d": summarise(raw, n_bootstrap=50)}}
    cacl = summary["corpora"]["c"]["splits"]["test-unseen"]["cacl"]["t2a_R@1"]["welch"]
    assert cacl["t"] is None and cacl["df"] is None
    text = render_markdown(summary)
    assert "| cacl | vs mlclap | T2A R@1 | +" in text
    assert "n/a (an arm has zero variance)" in text
    assert "#### test-unseen: retrieval" in text and "## Replication across corpora" in text
    assert "| test-unseen | cacl | T2A R@1 | n/a | n/a | no |" in text
    assert "| kcl | 4 | 3/3 | 3.0 | [2, 2, 2] | 10 | 80 | 2.0 | 0.50 | 400 |" in text
