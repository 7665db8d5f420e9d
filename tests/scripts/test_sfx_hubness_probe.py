"""scripts/sfx_hubness_probe.py: the hubness penalty ranks by s(q, a) - lam * r_a through
the project's own evaluator, and with lam = 0 it is plain `atri eval` on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atri.training.evaluation.metrics import evaluate_embeddings


@pytest.fixture(scope="module")
def probe(load_script):
    return load_script("sfx_hubness_probe")


def unit(v: list[float]) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_hub_scores_are_the_mean_of_the_k_highest_bank_similarities(probe):
    audio = np.stack([unit([1, 0]), unit([0, 1])])
    bank = np.stack([unit([1, 0]), unit([1, 1]), unit([0, 1]), unit([-1, 0])])
    r = probe.hub_scores(audio, bank, k=2)
    assert r == pytest.approx([(1 + 2**-0.5) / 2, (1 + 2**-0.5) / 2])
    assert probe.hub_scores(audio, bank, k=1) == pytest.approx([1.0, 1.0])


def test_a_penalised_hub_loses_the_first_place_it_stole(probe):
    audio = np.stack([unit([1, 1]), unit([1, 0])])  # clip 0 is the hub
    captions = np.stack([unit([0.2, 1]), unit([1, 0.8])])  # clip 0's, clip 1's
    text = {"eng": captions[:, None, :]}  # (N, C=1, D)
    assert float(audio[0] @ captions[1]) > float(audio[1] @ captions[1])  # the theft
    plain = evaluate_embeddings(audio, text)
    assert plain["t2a"]["eng"]["R@1"] == pytest.approx(50.0)

    r = np.array([0.9, 0.3])  # the hub sits close to the bank, clip 1 does not
    shifted, ones = probe.with_penalty(audio, text, r, lam=0.5)
    penalised = evaluate_embeddings(shifted, ones)
    assert penalised["t2a"]["eng"]["R@1"] == pytest.approx(100.0)
    assert penalised["a2t"]["eng"] == plain["a2t"]["eng"]  # a constant per audio query
    # too strong a penalty pushes the hub below clip 1 for its own caption as well
    shifted, ones = probe.with_penalty(audio, text, r, lam=2.0)
    assert evaluate_embeddings(shifted, ones)["t2a"]["eng"]["R@1"] == pytest.approx(50.0)


def test_lam_zero_reproduces_atri_eval_on_real_files(probe, tiny_corpus, make_checkpoint,
                                                     shared_cache, tmp_path):
    from atri.commands.eval import main as atri_eval

    checkpoint = str(make_checkpoint(5))  # frozen towers: the shared cache holds their features
    val = tiny_corpus / "val.jsonl"
    out = tmp_path / "probe.json"
    # the bank's content does not matter to lam = 0; the split's own captions keep it small
    assert probe.main(["--checkpoint", checkpoint, "--bank", "train", "--train", str(val),
                       "--manifest", str(val), "--langs", "eng", "jpn", "--ks", "5",
                       "--lambdas", "0", "0.5", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["k"], r["lam"]) for r in rows] == [(5, 0.0), (5, 0.5)]
    assert atri_eval(["--checkpoint", checkpoint, "--manifest", str(val), "--langs", "eng",
                      "jpn", "--out", str(tmp_path / "eval"), "--tsne-clips", "0"]) == 0
    plain = json.loads((tmp_path / "eval" / "metrics.json").read_text())["t2a"]["avg"]
    assert rows[0]["R@1"] == pytest.approx(plain["R@1"])
    assert rows[0]["R@10"] == pytest.approx(plain["R@10"])


def test_a_training_bank_needs_its_manifest(probe, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        probe.main(["--bank", "train", "--manifest", "val.jsonl", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "--bank train needs --train MANIFEST" in capsys.readouterr().err
