"""ML-CLAP checkpoints: the layout of zyyan4/ml-clap's `MLCLAP.state_dict()` (built here at
ced-tiny size; the mapping reads sizes from the tensors) loads into a RetrievalModel whose
embeddings equal ML-CLAP's formula; incomplete files are refused naming keys and groups."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atri.training.encoders.ced import create_ced
from atri.training.encoders.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_torch_file,
    save_checkpoint,
)
from atri.training.encoders.mlclap import (
    MLCLAP_CONFIG,
    TextEncoderUnavailable,
    export_sonar_text_encoder,
    split_mlclap_state,
    unwrap_state_dict,
)
from atri.training.encoders.strict_load import (
    CheckpointMismatchError,
    check_state_dict,
    load_state_dict_strict,
)
from atri.training.encoders.text_encoder import build_text_encoder

TEXTS = ["a dog barks twice", "rain falls on a tin roof"]
EMBED = 48
TEXT_DIM = 384  # e5-small's width, so e5 can stand in for SONAR behind text_proj


def _head(d_in: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, EMBED), nn.ReLU(), nn.Linear(EMBED, EMBED))


@pytest.fixture(scope="module")
def ced_state(spec_dir) -> dict[str, torch.Tensor]:
    ref = spec_dir / "ced_reference"
    state = torch.load(ref / "ced-tiny_random.pt", weights_only=True)
    return {**state, **torch.load(ref / "ced-tiny_perturbed_overlay.pt", weights_only=True)}


@pytest.fixture(scope="module")
def parts(ced_state):
    """The pieces of an ML-CLAP model, as modules, and its state dict under ML-CLAP's names."""
    audio_proj, text_proj = _head(192, 1), _head(TEXT_DIM, 2)
    sonar = {  # a few tensors under SONAR encoder names; never run here
        "encoder_frontend.embed.weight": torch.randn(11, 8),
        "encoder.layers.0.self_attn.q_proj.weight": torch.randn(8, 8),
        "layer_norm.weight": torch.ones(8),
    }
    state = {f"audio_encoder.model.{k}": v for k, v in ced_state.items()}
    state |= {f"audio_proj.{k}": v for k, v in audio_proj.state_dict().items()}
    state |= {f"text_proj.{k}": v for k, v in text_proj.state_dict().items()}
    state |= {f"text_encoder.model.{k}": v for k, v in sonar.items()}
    state["temperature"] = torch.tensor(0.0421)
    return {"audio_proj": audio_proj, "text_proj": text_proj, "sonar": sonar, "state": state}


@pytest.fixture(scope="module")
def mlclap_file(parts, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mlclap") / "mlclap_ft.pt"
    torch.save({"state_dict": parts["state"], "epoch": 9}, path)  # nested, as training scripts do
    return path


def _wave(spec_dir) -> torch.Tensor:
    return torch.from_numpy(np.load(spec_dir / "ced_reference" / "signal_2s.npy"))


@torch.inference_mode()
def test_audio_side_matches_mlclap_formula(spec_dir, ced_state, parts, mlclap_file, caplog):
    with caplog.at_level(logging.INFO, logger="atri.training.encoders.mlclap"):
        model, info = load_checkpoint(mlclap_file)
    assert info["source"] == "mlclap"
    assert (model.config.audio, model.config.embed_dim, model.config.text) == (
        "ced-tiny",
        EMBED,
        "sonar-raw",  # ML-CLAP's text_proj reads SONAR's unnormalised embeddings
    )
    assert model.tau().item() == pytest.approx(0.0421)
    summary = " ".join(r.getMessage() for r in caplog.records)
    assert (
        "audio_encoder.model.* (161 tensors)" in summary
        and "text_encoder.model.* (3 tensors)" in summary
    )

    # ML-CLAP: F.normalize(audio_proj(ced(wave)), dim=-1), with CED's mean-pooled tokens
    ced = create_ced("ced-tiny").eval()
    load_state_dict_strict(ced, ced_state)
    wave = _wave(spec_dir)
    expected = F.normalize(parts["audio_proj"](ced.embed([wave])), dim=-1)
    torch.testing.assert_close(model.embed_audio([wave]), expected, rtol=0, atol=1e-6)
    reference = np.load(spec_dir / "ced_reference" / "ced-tiny_perturbed_out_2s_embed.npy")
    torch.testing.assert_close(
        model.audio_features([wave])[0], torch.from_numpy(reference), rtol=0, atol=1e-4
    )


def test_text_side_without_sonar_refuses_clearly(mlclap_file):
    model, _ = load_checkpoint(mlclap_file)
    assert model.text_dim == TEXT_DIM and model.identity()["text_encoder_version"] == "unavailable"
    with pytest.raises(TextEncoderUnavailable, match="export_sonar_text_encoder"):
        model.embed_text(TEXTS, "eng")
    with pytest.raises(CheckpointError, match="without its text encoder"):
        save_checkpoint(
            model, mlclap_file.parent / "x", training_config={}, step=0, epoch=0, metrics={}
        )


@torch.inference_mode()
def test_text_head_maps_text_proj(parts, mlclap_file):
    # e5 stands in for SONAR: what is tested is that text_proj.* became the text head
    model, _ = load_checkpoint(mlclap_file, text="e5-small")
    feats = build_text_encoder("e5-small").encode(TEXTS, "deu")
    expected = F.normalize(parts["text_proj"](feats), dim=-1)
    torch.testing.assert_close(model.embed_text(TEXTS, "deu"), expected, rtol=0, atol=1e-6)


def test_converted_model_saves_as_atri_checkpoint(spec_dir, mlclap_file, tmp_path):
    model, _ = load_checkpoint(mlclap_file, text="e5-small")
    save_checkpoint(
        model,
        tmp_path / "c",
        training_config={"init": str(mlclap_file)},
        step=0,
        epoch=0,
        metrics={},
    )
    meta = json.loads((tmp_path / "c" / "checkpoint.json").read_text())
    assert meta["model_config"]["audio"] == "ced-tiny"
    loaded, _ = load_checkpoint(tmp_path / "c")
    wave = [_wave(spec_dir)]
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded.embed_audio(wave), model.embed_audio(wave), rtol=0, atol=0
        )
    assert loaded.tau().item() == model.tau().item()


def test_missing_groups_and_keys_are_named(parts, tmp_path):
    state = dict(parts["state"])
    del state["audio_proj.2.bias"], state["temperature"]
    state["logit_scale"] = torch.tensor(1.0)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(tmp_path / "bad.pt")
    message = str(err.value)
    for part in (
        "audio_proj.2.bias",
        "temperature",
        "logit_scale",
        "text_proj.{0,2}",
        "(161 tensors)",
    ):
        assert part in message


def test_incomplete_ced_inside_is_named(parts, tmp_path):
    state = dict(parts["state"])
    del state["audio_encoder.model.blocks.0.attn.qkv.bias"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.0\.attn\.qkv\.bias"):
        load_checkpoint(tmp_path / "bad.pt")


def test_text_encoder_width_must_match(parts, tmp_path):
    state = dict(parts["state"])
    state |= {f"text_proj.{k}": v for k, v in _head(1024, 3).state_dict().items()}  # SONAR's width
    torch.save(state, tmp_path / "wide.pt")
    with pytest.raises(CheckpointMismatchError, match="1024-d features"):
        load_checkpoint(tmp_path / "wide.pt", text="e5-small")
    model, _ = load_checkpoint(tmp_path / "wide.pt")  # without a text spec: audio side only
    assert model.text_dim == 1024


def test_export_sonar_text_encoder(parts, tmp_path):
    split = split_mlclap_state(unwrap_state_dict({"model": parts["state"]}))
    path = export_sonar_text_encoder(split, tmp_path / "sonar")
    assert path == tmp_path / "sonar" / "encoder.pt"
    exported = load_torch_file(path)["model"]
    assert exported.keys() == parts["sonar"].keys()
    for key, value in parts["sonar"].items():
        assert torch.equal(exported[key], value)


def test_unwrap_prefixes_and_real_sizes(spec_dir):
    state = {"module.audio_proj.0.weight": torch.zeros(1)}
    assert list(unwrap_state_dict({"state_dict": state})) == ["audio_proj.0.weight"]
    with pytest.raises(CheckpointMismatchError, match="no state dict"):
        unwrap_state_dict({"epoch": 3, "optimizer": {"lr": 0.1}})
    # the released layout at full size, on the meta device (no memory): ced-base + 1024-d
    keys = json.loads((spec_dir / "ced_reference" / "keys_ced-base.json").read_text())
    meta = {f"audio_encoder.model.{k}": torch.empty(shape, device="meta") for k, shape, _ in keys}
    for name, d_in in (("audio_proj", 768), ("text_proj", 1024)):
        for i, shape in ((0, (1024, d_in)), (2, (1024, 1024))):
            meta[f"{name}.{i}.weight"] = torch.empty(shape, device="meta")
            meta[f"{name}.{i}.bias"] = torch.empty(1024, device="meta")
    meta["temperature"] = torch.empty((), device="meta")
    split = split_mlclap_state(meta)
    assert (split.audio, split.embed_dim, split.text_dim) == ("ced-base", 1024, 1024)
    assert (MLCLAP_CONFIG.audio, MLCLAP_CONFIG.embed_dim) == (split.audio, split.embed_dim)
    with torch.device("meta"):
        ced_base = create_ced("ced-base")
    check_state_dict(ced_base.state_dict(), split.audio_backbone, "ced-base")
