"""scripts/study.py end to end on the tiny demo corpus (real features, real training,
in-process to skip the per-run start-up): arms with step-matched budgets, early stopping,
every test split (test-unseen included), Welch df and cluster-bootstrap intervals, the
learning curves, the fine-tuned-tower passthrough and resuming. The slow test adds the
mixture arm and a second corpus (the same folder under another name: it tests the
machinery of several corpora, not the science)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

LANGS = "eng,fra,deu,jpn"


@pytest.fixture(scope="module")
def study(load_script):
    return load_script("study")


def study_argv(corpora: list[Path], out: Path, arms: list[str], cache: Path) -> list[str]:
    return [
        "--corpus", *map(str, corpora), "--out", str(out), "--seeds", "0", "1",
        "--epochs", "2", "--patience", "1", "--arms", *arms,
        "--train-args", f"--langs {LANGS} --lr 2e-3", "--finetune", "--weight-decay 0.05",
        "--cache-dir", str(cache), "--bootstrap", "200", "--in-process",
    ]


@pytest.fixture(scope="module")
def ran(study, tiny_corpus, feature_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    argv = study_argv([tiny_corpus], out, ["mlclap", "kcl-x8"], feature_cache)
    assert study.main(argv) == 0
    return out, argv, json.loads((out / "results.json").read_text())


def test_every_test_split_and_arm_is_summarised(ran, tiny_corpus):
    _, _, results = ran
    corpus = results["corpora"][tiny_corpus.name]
    assert set(corpus["splits"]) == {"test", "test-unseen", "test-xfont"}
    arms = corpus["splits"]["test-unseen"]
    assert set(arms) == {"mlclap", "kcl-x8", "mlclap+ft", "kcl-x8+ft"}
    assert corpus["baselines"]["kcl-x8+ft"] == "mlclap+ft"
    assert corpus["baselines"]["mlclap"] is None
    kcl = arms["kcl-x8"]
    w = kcl["t2a_R@1"]["welch"]
    assert w["t"] is None or (w["df"] >= 1 and w["low"] <= w["diff"] <= w["high"])
    mean, low, high = kcl["t2a_R@1"]["bootstrap"]
    assert low <= mean <= high
    for name in ("agree_t2a", "logvar_t2a", "agree_a2t", "logvar_a2t"):
        assert all(v == v for v in kcl[name]["values"])  # computed, not NaN


def test_mixture_budget_matches_mlclap_steps(study, tiny_corpus):
    table = study.CaptionTable.from_manifest(
        study.read_manifest(tiny_corpus / "train.jsonl"), LANGS.split(","))
    steps = {s: study.draw_epoch(s, table, 0, 0).n_batches(24) for s in ("mlclap",
                                                                          "mlclap-mixture")}
    assert steps["mlclap"] == 5  # 120 clips
    assert 11 <= steps["mlclap-mixture"] <= 15  # ~2.6 rows per clip: 2 English + 0.1 x 6
    for epochs in (2, 10, 40):
        mixture = study.arm_epochs(study.ARMS["mlclap-mixture"], epochs, table, 24)
        budget = epochs * steps["mlclap"]
        assert abs(mixture * steps["mlclap-mixture"] - budget) <= steps["mlclap-mixture"] / 2
    assert study.arm_epochs(study.ARMS["kcl-x8"], 10, table, 24) == 80


def test_budgets_and_exposure_counted(ran, tiny_corpus):
    _, _, results = ran
    budget = results["corpora"][tiny_corpus.name]["budget"]
    assert budget["mlclap"]["epochs_budget"] == [2, 2]
    assert budget["kcl-x8"]["epochs_budget"] == [16, 16]
    for arm, k in (("mlclap", 1), ("kcl-x8", 4)):
        b = budget[arm]
        per_step = zip(b["caption_updates_best"], b["steps_best"], strict=True)
        assert [c / s for c, s in per_step] == [24 * k] * 2
    for b in budget.values():
        for run, early in zip(b["epochs_run"], b["early_stopped"], strict=True):
            assert early or run == b["epochs_budget"][0]
            assert run <= b["epochs_budget"][0]


def test_markdown_curves_and_commands(ran, tiny_corpus):
    out, _, results = ran
    text = (out / "results.md").read_text()
    for needle in ("#### test-unseen: retrieval", "Welch t (df)", "cluster bootstrap 95%",
                   "top-1 agreement T2A", "log-rank var T2A", "caption updates at best",
                   f"![learning curves](curves-{tiny_corpus.name}.png)"):
        assert needle in text, needle
    png = (out / f"curves-{tiny_corpus.name}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    commands = results["corpora"][tiny_corpus.name]["commands"]
    assert all("--weight-decay 0.05" in c for c in commands["kcl-x8+ft"])
    assert not any("--weight-decay" in c for c in commands["kcl-x8"])
    assert all("--patience 1" in c for cmds in commands.values() for c in cmds)


def test_a_second_call_trains_nothing_and_says_the_same(ran, study):
    out, argv, results = ran
    logs = {p: p.stat().st_mtime_ns for p in out.rglob("log.jsonl")}
    assert study.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in logs} == logs
    assert json.loads((out / "results.json").read_text()) == results


def test_finetune_arms_choose_which_arms_run_again(ran, study, tiny_corpus, tmp_path):
    out, argv, _ = ran
    subset = tmp_path / "subset"  # a copy, so the module's results stay as they were
    shutil.copytree(out, subset)
    argv = [str(subset) if a == str(out) else a for a in argv] + ["--finetune-arms", "mlclap"]
    assert study.main(argv) == 0
    arms = json.loads((subset / "results.json").read_text())["corpora"][tiny_corpus.name]
    assert set(arms["splits"]["test"]) == {"mlclap", "kcl-x8", "mlclap+ft"}


def test_finetuned_arms_can_start_from_the_frozen_runs(ran, study, tiny_corpus, tmp_path):
    out, argv, _ = ran
    staged = tmp_path / "staged"
    shutil.copytree(out, staged, ignore=shutil.ignore_patterns("*+ft-s*"))
    argv = [str(staged) if a == str(out) else a for a in argv]
    argv += ["--finetune-arms", "mlclap", "--finetune-from", "mlclap", "--finetune-epochs", "1"]
    assert study.main(argv) == 0
    corpus = json.loads((staged / "results.json").read_text())["corpora"][tiny_corpus.name]
    for seed, command in zip((0, 1), corpus["commands"]["mlclap+ft"], strict=True):
        start = staged / tiny_corpus.name / "runs" / f"mlclap-s{seed}" / "best"
        assert f"--init-from {start}" in command and "--epochs 1 " in command
        info = json.loads((staged / tiny_corpus.name / "runs" / f"mlclap+ft-s{seed}" / "best"
                           / "checkpoint.json").read_text())
        assert info["training_config"]["init_from"] == str(start)
    assert corpus["budget"]["mlclap+ft"]["epochs_budget"] == [1, 1]


def test_bad_arguments_are_named(study, tiny_corpus, tmp_path, capsys):
    with pytest.raises(SystemExit):
        study.main(["--corpus", str(tiny_corpus), "--out", str(tmp_path), "--seeds", "0"])
    assert "at least 2 seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["--corpus", str(tiny_corpus), "--out", str(tmp_path), "--arms", "kcl"])
    assert "baseline mlclap is needed" in capsys.readouterr().err
    base = ["--corpus", str(tiny_corpus), "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        study.main([*base, "--finetune", "--lr 1e-3", "--finetune-arms", "kcl"])
    assert "--finetune-arms: the baseline mlclap is needed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main([*base, "--finetune-arms", "mlclap"])
    assert "--finetune-arms needs --finetune" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main([*base, "--arms", "mlclap", "--finetune", "--lr 1e-3",
                    "--finetune-from", "kcl"])
    assert "--finetune-from: kcl is not among --arms" in capsys.readouterr().err


@pytest.mark.slow  # ~24 runs
def test_two_corpora_and_the_mixture_arm(study, tiny_corpus, feature_cache, tmp_path):
    second = tmp_path / "tiny-b"
    second.symlink_to(tiny_corpus, target_is_directory=True)
    out = tmp_path / "out"
    argv = study_argv([tiny_corpus, second], out, ["mlclap", "mlclap-mixture", "kcl-x8"],
                      feature_cache)
    assert study.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["corpora"]) == {tiny_corpus.name, "tiny-b"}
    text = (out / "results.md").read_text()
    assert "## Replication across corpora" in text
    assert "![learning curves](curves-tiny-b.png)" in text
    mixture = results["corpora"]["tiny-b"]["budget"]["mlclap-mixture"]
    assert mixture["epochs_budget"][0] < 2
