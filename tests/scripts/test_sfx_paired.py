"""scripts/sfx_paired.py: per-query T2A differences of two checkpoints on real files, whose
averages are exactly `atri eval`'s and whose interval holds the difference."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def paired(load_script):
    return load_script("sfx_paired")


def test_two_checkpoints_on_real_files(paired, tiny_corpus, make_checkpoint, tmp_path,
                                       monkeypatch):
    from atri.commands.eval import main as atri_eval

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    val = tiny_corpus / "val.jsonl"
    untrained = make_checkpoint(5)
    out = tmp_path / "paired.json"
    assert paired.main(["--a", "default", "--b", str(untrained), "--manifest", str(val),
                        "--out", str(out)]) == 0
    row = json.loads(out.read_text())["splits"][str(val)]
    for name, checkpoint in (("a", "default"), ("b", str(untrained))):
        assert atri_eval(["--checkpoint", checkpoint, "--manifest", str(val),
                          "--out", str(tmp_path / name)]) == 0
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())["t2a"]["avg"]
        for k in (1, 10):
            assert row[f"R@{k}"][name] == pytest.approx(metrics[f"R@{k}"])
    r10 = row["R@10"]
    assert r10["diff"] == pytest.approx(r10["a"] - r10["b"])
    assert r10["diff"] > 10  # the trained default against random heads
    low, high = r10["ci95"]
    assert 0 < low <= r10["diff"] <= high


def test_a_checkpoint_against_itself_differs_by_nothing(paired, tiny_corpus, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    val = tiny_corpus / "val.jsonl"
    out = tmp_path / "same.json"
    assert paired.main(["--a", "default", "--b", "default", "--manifest", str(val),
                        "--out", str(out)]) == 0
    row = json.loads(out.read_text())["splits"][str(val)]
    n_clips = len(val.read_text().splitlines())
    assert 1 < row["n_units"] <= n_clips  # demo clips have no concept: a unit per clip
    for k in (1, 10):
        assert row[f"R@{k}"]["diff"] == 0 and row[f"R@{k}"]["ci95"] == [0.0, 0.0]
