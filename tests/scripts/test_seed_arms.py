"""scripts/seed_arms.py on run folders laid out as atri train and atri eval write them:
paired differences by seed against hand-computed values, and missing reports refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats


@pytest.fixture(scope="module")
def seed_arms(load_script):
    return load_script("seed_arms")


def _run(root: Path, arm: str, seed: int, val: float, r10: float) -> None:
    folder = root / f"{arm}-s{seed}"
    (folder / "best").mkdir(parents=True)
    (folder / "best" / "checkpoint.json").write_text(
        json.dumps({"epoch": 3, "metrics": {"val_score": val}}))
    (folder / "eval-test").mkdir()
    report = {d: {"avg": {"R@1": r10 / 4, "R@10": r10}} for d in ("t2a", "a2t")}
    (folder / "eval-test" / "metrics.json").write_text(json.dumps(report))


def test_differences_are_paired_by_seed(seed_arms, tmp_path, capsys):
    base = {0: (20.0, 50.0), 1: (19.0, 48.0), 2: (21.0, 53.0)}
    gain = {0: (1.0, 2.0), 1: (0.5, 4.0), 2: (2.0, 3.0)}
    for s, (val, r10) in base.items():
        _run(tmp_path, "plain", s, val, r10)
        _run(tmp_path, "new", s, val + gain[s][0], r10 + gain[s][1])
    out = tmp_path / "out.json"
    argv = ["--runs", str(tmp_path / "{arm}-s{seed}"), "--arms", "plain", "new",
            "--baseline", "plain", "--seeds", "0", "1", "2", "--evals", "eval-test",
            "--out", str(out)]
    assert seed_arms.main(argv) == 0
    result = json.loads(out.read_text())
    diff = result["paired"]["new"]["eval-test/t2a_R@10"]
    assert diff["diffs"] == pytest.approx([2.0, 4.0, 3.0]) and diff["mean"] == pytest.approx(3.0)
    half = stats.t.ppf(0.975, 2) * 1.0 / 3 ** 0.5  # sample std of (2, 4, 3) is 1
    assert diff["ci95"] == pytest.approx([3.0 - half, 3.0 + half])
    assert result["paired"]["new"]["val_score"]["mean"] == pytest.approx(3.5 / 3)
    assert result["arms"]["plain"]["eval-test/t2a_R@10"]["mean"] == pytest.approx(151 / 3)
    assert "plain" not in result["paired"]
    assert "| new (n 3) | +1.2 [" in capsys.readouterr().out


def test_a_missing_report_is_an_error(seed_arms, tmp_path):
    for s in (0, 1):
        _run(tmp_path, "plain", s, 20.0, 50.0)
        _run(tmp_path, "new", s, 20.0, 50.0)
    (tmp_path / "new-s1" / "eval-test" / "metrics.json").unlink()
    with pytest.raises(SystemExit, match=r"new-s1/eval-test/metrics.json: missing"):
        seed_arms.main(["--runs", str(tmp_path / "{arm}-s{seed}"), "--arms", "plain", "new",
                        "--baseline", "plain", "--seeds", "0", "1", "--evals", "eval-test",
                        "--out", str(tmp_path / "o.json")])
