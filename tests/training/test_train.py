"""`atri train` end to end on the tiny demo corpus, with the real frozen aisfx + e5-small
features (cached once per session): every strategy learns, the best checkpoint loads,
resuming is exact, and two gloo processes train the same model as one process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atri.commands.train import main
from atri.training.batches import ValData
from atri.training.data.manifest import read_manifest, write_manifest
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.encoders.model import ModelConfig, build_model
from atri.training.objectives.strategies import NAMES as STRATEGIES

LANGS = ("eng", "fra", "deu", "jpn")  # four of the eight: the text features cost ~20 ms each
N_TRAIN, N_VAL = 48, 24
LOG_FIELDS = {
    "epoch", "step", "loss", "lr", "tau", "seconds", "val_score", "best", "val",
    "peak_rss_mb", "cuda_max_memory_mb", "clips_per_rank", "clips_on_several_ranks",
}


@pytest.fixture(scope="session")
def corpus(tiny_corpus: Path, feature_cache: Path) -> dict[str, Path]:
    """The session's tiny corpus cut to 48 train clips (some missing a language) and 24 val
    clips, with the session's feature cache."""
    root = tiny_corpus
    train = read_manifest(root / "train.jsonl").records[:N_TRAIN]
    for i, record in enumerate(train):
        if i % 3 == 0:  # every third clip lacks one of the four languages, English included
            record.captions.pop(LANGS[(i // 3) % len(LANGS)])
    write_manifest(root / "train-small.jsonl", train)
    write_manifest(root / "val-small.jsonl", read_manifest(root / "val.jsonl").records[:N_VAL])
    return {
        "train": root / "train-small.jsonl",
        "val": root / "val-small.jsonl",
        "cache": feature_cache,
    }


def train_args(corpus: dict[str, Path], out: Path, strategy: str, *extra: str) -> list[str]:
    return [
        "--train", str(corpus["train"]), "--val", str(corpus["val"]), "--strategy", strategy,
        "--out", str(out), "--cache-dir", str(corpus["cache"]), "--langs", ",".join(LANGS),
        "--epochs", "2", "--batch-size", "16", "--lr", "2e-3", "--seed", "1", *extra,
    ]


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_learns(corpus, tmp_path: Path, strategy: str) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus, run, strategy)) == 0
    log = read_log(run)
    assert [r["epoch"] for r in log] == [1, 2]
    assert LOG_FIELDS <= set(log[0])
    assert log[1]["loss"] < log[0]["loss"], [r["loss"] for r in log]
    assert log[0]["clips_per_rank"][0] > 0 and log[0]["peak_rss_mb"] > 0
    assert set(log[0]["val"]["t2a"]) == {*LANGS, "avg"}  # validated on the trained languages
    assert all(math.isfinite(r["loss"]) and 0.001 <= r["tau"] <= 0.5 for r in log)

    best_epoch = max(log, key=lambda r: r["val_score"])["epoch"]
    model, info = load_checkpoint(run / "best")
    assert info["epoch"] == best_epoch
    assert info["metrics"]["val_score"] == max(r["val_score"] for r in log)
    assert info["training_config"]["strategy"] == strategy
    state = torch.load(run / "last" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == log[-1]["step"]
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    with torch.no_grad():  # the saved heads are the ones that were validated
        emb = model.embed_text(["a flute plays"], "eng")
    assert emb.shape == (1, 512) and torch.isfinite(emb).all()


def test_fixed_tau_stays_put(corpus, tmp_path: Path) -> None:
    assert main(train_args(corpus, tmp_path / "run", "mlclap", "--fixed-tau")) == 0
    assert [r["tau"] for r in read_log(tmp_path / "run")] == pytest.approx([0.07, 0.07])
    model, _ = load_checkpoint(tmp_path / "run" / "best")
    assert not any(p is model.temperature for p in model.parameters())


def test_patience_stops_once_validation_stops_improving(corpus, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus, run, "kcl", "--epochs", "40", "--patience", "2")) == 0
    log, status = read_log(run), json.loads((run / "run.json").read_text())
    best = max(log, key=lambda r: r["val_score"])
    assert status["early_stopped"] and status["status"] == "done"
    assert len(log) == status["epoch"] < 40
    assert log[-1]["epoch"] - best["epoch"] == 2 == status["epoch"] - status["best_epoch"]
    assert all(r["val_score"] <= best["val_score"] for r in log[best["epoch"]:])
    for r in log:  # exposure: 16 clips a step, K captions each unless a language is missing
        assert r["audio_items"] == 16 * r["step"]
        assert r["audio_items"] < r["caption_updates"] <= 4 * r["audio_items"]
    # a finished run is not continued
    assert main(["--out", str(run), "--resume", "--cache-dir", str(corpus["cache"])]) == 0
    assert len(read_log(run)) == len(log)


def test_constant_schedule_keeps_the_peak_after_the_first_epoch(corpus, tmp_path) -> None:
    assert main(train_args(corpus, tmp_path / "c", "mlclap", "--epochs", "3",
                           "--lr-schedule", "constant")) == 0
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["lr_schedule"] == "constant"
    peak = config["lr"]
    assert [r["lr"] for r in read_log(tmp_path / "c")] == pytest.approx([peak] * 3)
    assert main(train_args(corpus, tmp_path / "d", "mlclap", "--epochs", "3")) == 0
    assert read_log(tmp_path / "d")[-1]["lr"] < peak / 10  # cosine: near 0 at the end


def test_mlclap_updates_one_caption_per_clip(corpus, tmp_path: Path) -> None:
    assert main(train_args(corpus, tmp_path / "run", "mlclap")) == 0
    log = read_log(tmp_path / "run")
    assert [r["caption_updates"] for r in log] == [r["audio_items"] for r in log]
    assert [r["audio_items"] for r in log] == [16 * r["step"] for r in log]


def test_resume_mid_epoch_is_exact(corpus, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(train_args(corpus, straight, "kcl")) == 0
    # a time budget that runs out at once stops after the first step, resumably
    assert main(train_args(corpus, split, "kcl", "--max-minutes", "1e-9")) == 0
    status = json.loads((split / "run.json").read_text())
    assert (status["status"], status["epoch"], status["batch"]) == ("stopped", 0, 1)
    assert not (split / "log.jsonl").read_text()
    assert main(["--out", str(split), "--resume", "--cache-dir", str(corpus["cache"])]) == 0
    assert_same_run(straight, split)


def test_resume_after_a_crash_is_exact(corpus, tmp_path: Path, monkeypatch) -> None:
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert main(train_args(corpus, straight, "cacl")) == 0
    evaluate = ValData.evaluate
    calls = []

    def crash_in_second_validation(self, model):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return evaluate(self, model)

    monkeypatch.setattr(ValData, "evaluate", crash_in_second_validation)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(train_args(corpus, crashed, "cacl"))
    monkeypatch.setattr(ValData, "evaluate", evaluate)
    assert main([*train_args(corpus, crashed, "cacl"), "--resume"]) == 0
    assert_same_run(straight, crashed)


def assert_same_run(a: Path, b: Path) -> None:
    for name in ("last", "best"):
        wa, wb = weights(a / name), weights(b / name)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{name}/{key} differs"
    log_a, log_b = read_log(a), read_log(b)
    for field in ("epoch", "step", "loss", "lr", "tau", "val_score", "best"):
        assert [r[field] for r in log_a] == [r[field] for r in log_b], field


def test_resume_refuses_another_config(corpus, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus, run, "mlclap", "--epochs", "1")) == 0
    assert main(train_args(corpus, run, "mlclap", "--epochs", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*train_args(corpus, run, "mlclap", "--epochs", "1"), "--resume",
                 "--lr", "0.5"]) == 2
    assert "cannot change ['lr']" in capsys.readouterr().err
    assert main([*train_args(corpus, run, "mlclap", "--epochs", "1"), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--langs", "eng,xx"], "not among"),
        (["--batch-size", "4096"], "exceeds"),
        (["--strategy", "cacl", "--langs", "fra,deu"], "cacl needs English"),
        (["--warmup", "1.5"], "warmup"),
        (["--lr-schedule", "linear"], "lr_schedule"),
        (["--patience", "-1"], "patience = -1 is out of range"),
        (["--strategy", "cacl", "--mask-duplicate-captions"],
         "mask_duplicate_captions: strategy 'cacl' does not support it"),
        (["--strategy", "mlclap", "--mask-same", "concept"],
         "mask_same: strategy 'mlclap' does not support it"),
        (["--strategy", "kcl", "--mask-same", "concept+"], "none empty"),
        (["--strategy", "kcl", "--multi-positive"], "multi_positive needs the pairs"),
        (["--prototype-weight", "1"], "prototype_weight needs prototype_key"),
        (["--prototype-weight", "-1", "--prototype-key", "concept"], "must be >= 0"),
        (["--prototype-weight", "1", "--prototype-key", "concept",
          "--audio-trainable-blocks", "1"], "prototype_weight needs cached audio features"),
        (["--prototype-weight", "1", "--prototype-key", "no_such_key"],
         "prototype_key 'no_such_key' groups nothing"),
        (["--strategy", "cacl", "--mask-same", "concept", "--multi-positive"],
         "multi_positive: strategy 'cacl' does not support it"),
        (["--strategy", "kcl", "--mask-same", "no_such_key"],
         "no clip has a meta 'no_such_key' value"),
    ],
)
def test_bad_input_exits_2(corpus, tmp_path: Path, capsys, extra, message) -> None:
    assert main([*train_args(corpus, tmp_path / "run", "kcl"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # a refused run leaves nothing to --resume


def test_config_file_then_flags(corpus, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"epochs": 1, "batch_size": 8, "model": {"embed_dim": 64}}))
    run = tmp_path / "run"
    assert main([*train_args(corpus, run, "kcl-balanced"), "--config", str(config),
                 "--epochs", "1"]) == 0
    stored = json.loads((run / "config.json").read_text())
    assert (stored["epochs"], stored["model"]["embed_dim"]) == (1, 64)
    assert stored["batch_size"] == 16  # the flag wins over the file
    assert read_log(run)[0]["step"] == N_TRAIN // 16


def test_live_backbones_train(corpus, tmp_path: Path) -> None:
    """Trainable aisfx on live audio and a trainable (tiny, random) BERT on live text."""
    pytest.importorskip("transformers")
    bert = make_tiny_bert(tmp_path / "bert")
    root = corpus["train"].parent
    write_manifest(root / "train-8.jsonl", read_manifest(corpus["train"]).records[:8])
    write_manifest(root / "val-4.jsonl", read_manifest(corpus["val"]).records[:4])
    run = tmp_path / "run"
    args = [
        "--train", str(root / "train-8.jsonl"), "--val", str(root / "val-4.jsonl"),
        "--strategy", "kcl", "--out", str(run), "--cache-dir", str(tmp_path / "cache"),
        "--langs", "eng,fra", "--epochs", "1", "--batch-size", "4",
        "--audio-trainable", "--text", f"hf:{bert}", "--text-trainable",
        "--max-audio-seconds", "1", "--workers", "0",
    ]
    before = build_model(ModelConfig(text=f"hf:{bert}", text_trainable=True))
    assert main(args) == 0
    assert not (tmp_path / "cache" / "audio").exists()  # nothing cached: all live
    model, _ = load_checkpoint(run / "last")
    for name in ("audio_backbone.cnn", "text_tower"):
        old = {k: v for k, v in before.state_dict().items() if k.startswith(name)}
        new = {k: v for k, v in model.state_dict().items() if k.startswith(name)}
        assert old and any(not torch.equal(old[k], new[k]) for k in old), f"{name} did not move"


def make_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-d BERT with a character vocab (as tests/training/test_text_encoder.py)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


# --- DDP: two torchrun processes train the model one process trains (the step itself:
# test_train_ddp.py) ------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_gloo_processes_match_one(corpus, tmp_path: Path) -> None:
    """torchrun, 2 CPU processes x 8 clips = the global batch of 16 of one process (about
    a minute on two busy cores: process start-up, model and cache loading, twice)."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(train_args(corpus, single, "mlclap-mixture")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "atri", "train", *train_args(corpus, ddp, "mlclap-mixture")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = read_log(ddp)
    for record in log:
        assert record["world_size"] == 2
        assert len(record["clips_per_rank"]) == 2 and all(n > 0 for n in record["clips_per_rank"])
    assert log[0]["clips_on_several_ranks"] < min(log[0]["clips_per_rank"])  # different shards
    model, _ = load_checkpoint(ddp / "best")  # the checkpoint rank 0 wrote loads
    w1, w2 = weights(single / "last"), weights(ddp / "last")
    steps = 2 * math.ceil(N_TRAIN / 16)  # 2 epochs at batch 16
    for key in w1:
        # Adam divides each gradient by its running RMS, so where a gradient is ~0 the
        # float-rounding difference between one process and two can flip its sign and move
        # that weight by up to lr per step (seen: 1 of 262,144 elements, by 3e-4). So
        # nearly every element agrees closely, and none by more than lr per step.
        close = torch.isclose(w2[key], w1[key], rtol=1e-3, atol=1e-4)
        assert close.float().mean() >= 0.9999, f"{key}: {int((~close).sum())} differ"
        assert float((w2[key] - w1[key]).abs().max()) <= 2e-3 * steps, key
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in read_log(single)],
                                                     rel=1e-4)
    assert not list(ddp.glob(".*tmp*"))
