"""scripts/study_compare.py on two results.json files written here: seeds are aligned by
the run commands (not by position), Welch's difference matches scipy's, identical seeds
give "n/a", and a missing arm is an error naming the file and the arm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats


@pytest.fixture(scope="module")
def compare(load_script):
    return load_script("study_compare")


def results(path: Path, arm: str, by_seed: dict[int, float], dis: float) -> Path:
    seeds = list(by_seed)
    commands = [f"atri train --strategy kcl --seed {s} --batch-size 24" for s in seeds]
    split = {arm: {"t2a_R@1": {"values": [by_seed[s] for s in seeds]},
                   "dis": {"values": [dis] * len(seeds)}}}
    path.write_text(json.dumps({"corpora": {"c0": {"splits": {"test": split},
                                                   "commands": {arm: commands}}}}))
    return path


def test_seeds_aligned_and_welch(compare, tmp_path, capsys):
    a = results(tmp_path / "a.json", "kcl+ft", {2: 44.0, 0: 40.0, 1: 43.0, 7: 99.0}, 0.3)
    b = results(tmp_path / "b.json", "kcl+ft", {0: 38.0, 1: 39.5, 2: 41.0}, 0.3)
    assert compare.main([str(a), str(b), "--arms", "kcl+ft", "--metrics", "t2a_R@1", "dis"]) == 0
    lines = capsys.readouterr().out.splitlines()
    r1 = next(x for x in lines if "t2a_R@1" in x).split(" | ")
    xa, xb = [40.0, 43.0, 44.0], [38.0, 39.5, 41.0]  # seed 7 is only in A: left out
    t = stats.ttest_ind(xa, xb, equal_var=False)
    assert r1[4:7] == ["3", f"{np.mean(xa):.2f}", f"{np.mean(xb):.2f}"]
    assert r1[7].startswith(f"{np.mean(xa) - np.mean(xb):+.2f} [")
    assert r1[8].startswith(f"{t.statistic:+.1f} (")
    dis = next(x for x in lines if "| dis |" in x).split(" | ")
    assert dis[7:9] == ["n/a", "n/a |"]  # every seed agrees exactly: no t


def test_missing_arm_names_file_and_arm(compare, tmp_path):
    a = results(tmp_path / "a.json", "kcl+ft", {0: 1.0, 1: 2.0}, 0.3)
    b = results(tmp_path / "b.json", "mlclap+ft", {0: 1.0, 1: 2.0}, 0.3)
    with pytest.raises(SystemExit, match=r"b\.json: no 'kcl\+ft'.*arm 'kcl\+ft'"):
        compare.main([str(a), str(b), "--arms", "kcl+ft"])


def test_not_a_results_file(compare, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="bad.json: not a scripts/study.py results.json"):
        compare.main([str(bad), str(bad), "--arms", "kcl"])
