"""scripts/checkpoint_soup.py: a weighted mean of checkpoints' tensors, saved as a checkpoint
that loads and embeds like any other."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def soup(load_script):
    return load_script("checkpoint_soup")


@pytest.fixture(scope="module")
def one_block_checkpoint(tmp_path_factory):
    """The default architecture with aisfx's top block trained: that block moved off the
    packaged weights, so a soup with a frozen-backbone checkpoint has something to average."""
    from atri.training.encoders.checkpoint import save_checkpoint
    from atri.training.encoders.model import ModelConfig, build_model

    torch.manual_seed(7)
    model = build_model(ModelConfig(audio_trainable_blocks=1))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("ckpt") / "top1"
    save_checkpoint(model, out, training_config={}, step=0, epoch=0, metrics={})
    return out


def states(*paths):
    from atri.training.encoders.checkpoint import load_checkpoint

    return [load_checkpoint(str(p))[0].state_dict() for p in paths]


def test_half_and_half_is_the_mean_of_every_tensor(soup, make_checkpoint, one_block_checkpoint,
                                                   tmp_path):
    frozen = make_checkpoint(3)
    out = tmp_path / "soup"
    assert soup.main(["--checkpoints", str(frozen), str(one_block_checkpoint),
                      "--out", str(out)]) == 0
    a, b, mixed = states(frozen, one_block_checkpoint, out)
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["model_config"]["audio_trainable_blocks"] == 1  # the widest ingredient's
    assert [i["weight"] for i in meta["training_config"]["soup"]] == [0.5, 0.5]
    assert a.keys() == mixed.keys()
    moved = 0
    for key, value in mixed.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (a[key] + b[key]) / 2)
            moved += not torch.equal(a[key], b[key])
    assert moved > 10  # heads and the top block differ; the mean lies between


def test_weight_one_reproduces_the_ingredient_and_its_embeddings(soup, make_checkpoint,
                                                                tmp_path):
    from atri.training.encoders.checkpoint import load_checkpoint

    first, second = make_checkpoint(4), make_checkpoint(5)
    out = tmp_path / "soup"
    assert soup.main(["--checkpoints", str(first), str(second), "--weights", "1", "0",
                      "--out", str(out)]) == 0
    for key, value in states(out)[0].items():
        assert torch.equal(value, states(first)[0][key])
    original, copy = load_checkpoint(str(first))[0], load_checkpoint(str(out))[0]
    with torch.no_grad():
        query = ("verre brisé",)
        torch.testing.assert_close(copy.embed_text(list(query), "fra"),
                                   original.embed_text(list(query), "fra"))


def test_other_architectures_are_refused(soup, make_checkpoint, tmp_path, capsys):
    from atri.training.encoders.checkpoint import save_checkpoint
    from atri.training.encoders.model import ModelConfig, build_model

    other = tmp_path / "dim256"
    save_checkpoint(build_model(ModelConfig(embed_dim=256)), other, training_config={},
                    step=0, epoch=0, metrics={})
    out = tmp_path / "soup"
    assert soup.main(["--checkpoints", str(make_checkpoint(3)), str(other),
                      "--out", str(out)]) == 2
    assert "embed_dim" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("weights, message", [
    (["0.5"], "1 given for 2 checkpoints"),
    (["0.7", "0.7"], "sum to 1"),
    (["1.5", "-0.5"], ">= 0"),
])
def test_bad_weights_are_named(soup, make_checkpoint, tmp_path, capsys, weights, message):
    with pytest.raises(SystemExit) as exit_info:
        soup.main(["--checkpoints", str(make_checkpoint(3)), str(make_checkpoint(4)),
                   "--weights", *weights, "--out", str(tmp_path / "soup")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
