"""`--audio-trainable-blocks N`: the top N conv blocks of aisfx learn (their BatchNorm
statistics frozen), the lower blocks' outputs are cached and equal the full forward, the
checkpoint holds exactly the trained blocks and loads strictly, the frozen-feature cache
never serves a fine-tuned tower, and `atri train` / `atri eval` / `atri embed` agree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from atri.commands.embed import main as embed_main
from atri.commands.eval import main as eval_main
from atri.commands.train import main as train_main
from atri.training.data.features import audio_features
from atri.training.data.manifest import read_manifest
from atri.training.encoders.aisfx import load_aisfx_state
from atri.training.encoders.checkpoint import load_checkpoint, save_checkpoint, saved_state
from atri.training.encoders.model import ModelConfig, RetrievalModel, build_model
from atri.training.encoders.strict_load import CheckpointMismatchError
from atri.training.evaluation.embed import embed_manifest

BLOCKS = ("conv_block1", "conv_block2", "conv_block3", "conv_block4")


def _clips(rate: int) -> list[torch.Tensor]:
    """Three lengths: one block padded, exactly 3 blocks-ish, and several blocks."""
    g = torch.Generator().manual_seed(5)
    return [0.1 * torch.randn(n, generator=g) for n in (rate // 3, 2 * rate, 4 * rate)]


def _model(e5, blocks: int) -> RetrievalModel:
    torch.manual_seed(0)
    return build_model(ModelConfig(embed_dim=32, audio_trainable_blocks=blocks), text_encoder=e5)


def _perturb_top(model: RetrievalModel, blocks: int) -> None:
    """Stand in for training: move the trainable blocks' weights."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name in BLOCKS[4 - blocks:]:
            for p in getattr(model.audio_backbone.cnn, name).parameters():
                p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=g))


def test_zero_blocks_is_the_frozen_backbone(e5) -> None:
    model = _model(e5, 0)
    assert model.config == ModelConfig(embed_dim=32)  # the default: same config, same run
    assert model.audio_top is None
    assert not any(p.requires_grad for p in model.audio_backbone.parameters())
    model.train()
    assert not model.audio_backbone.training
    assert not model.audio_features(_clips(model.sample_rate)[:1]).requires_grad
    assert not any(k.startswith("audio_backbone.") for k in saved_state(model))


@pytest.mark.parametrize("blocks", [1, 2])
def test_gradients_reach_only_the_top_blocks_and_the_heads(e5, blocks: int) -> None:
    model = _model(e5, blocks).train()
    cnn = model.audio_backbone.cnn
    assert not model.audio_backbone.training  # BatchNorm keeps aisfx's statistics
    stats = {k: v.clone() for k, v in cnn.state_dict().items() if "running" in k}
    audio = model.embed_audio(_clips(model.sample_rate))  # (3, E)
    text = model.embed_text(["a dog barks", "rain", "a bell"], "eng")  # (3, E)
    (audio @ text.T / model.tau()).log_softmax(1).diagonal().sum().neg().backward()
    for i, name in enumerate(BLOCKS):
        params = list(getattr(cnn, name).parameters())
        if i >= 4 - blocks:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name
        else:
            assert all(not p.requires_grad and p.grad is None for p in params), name
    for head in (model.audio_head, model.text_head):
        assert all(p.grad.abs().sum() > 0 for p in head.parameters())
    assert model.temperature.grad is not None
    for key, value in cnn.state_dict().items():
        if key in stats:
            assert torch.equal(value, stats[key]), key
    model.eval()


@pytest.mark.parametrize("blocks", [1, 2, 3, 4])
def test_cached_lower_path_equals_the_full_forward(e5, blocks: int) -> None:
    model = _model(e5, blocks)
    _perturb_top(model, blocks)
    clips = _clips(model.sample_rate)
    full = model.audio_features(clips)  # eval mode: the whole CNN, as `atri eval` runs it
    model.train()
    first = model.audio_features(clips)  # lower outputs computed and cached
    again = model.audio_features(list(reversed(clips)))  # from the cache
    model.eval()
    assert first.requires_grad
    assert len(model.audio_top._cache) == len(clips)
    torch.testing.assert_close(first.detach(), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again.detach().flip(0), first.detach(), rtol=0, atol=0)


def test_lower_cache_is_bounded(e5) -> None:
    model = _model(e5, 1)
    top = model.audio_top
    clips = _clips(model.sample_rate)
    one = top.lower_output(clips[2])
    top.cache_bytes = one.numel() * one.element_size()  # room for the largest clip only
    model.train()
    model.audio_features(clips)
    model.eval()
    assert len(top._cache) == 1 and top._bytes <= top.cache_bytes


def test_checkpoint_holds_the_trained_blocks_and_reproduces_embeddings(e5, tmp_path) -> None:
    model = _model(e5, 1)
    _perturb_top(model, 1)
    out = save_checkpoint(model, tmp_path / "best", training_config={}, step=1, epoch=1,
                          metrics={})
    state = load_file(str(out / "model.safetensors"))
    backbone = {k for k in state if k.startswith("audio_backbone.")}
    top = model.audio_backbone.cnn.conv_block4.state_dict()
    assert backbone == {f"audio_backbone.cnn.conv_block4.{k}" for k in top}
    loaded, info = load_checkpoint(out)
    assert info["model_config"]["audio_trainable_blocks"] == 1
    clips = _clips(model.sample_rate)
    torch.testing.assert_close(loaded.embed_audio(clips), model.embed_audio(clips), rtol=0, atol=0)
    # the lower blocks are aisfx's own, the top one is the trained one
    pristine = load_aisfx_state()
    cnn = loaded.audio_backbone.cnn.state_dict()
    assert all(torch.equal(cnn[k], v) for k, v in pristine.items() if k.startswith("conv_block3"))
    assert not torch.equal(cnn["conv_block4.conv2.weight"], pristine["conv_block4.conv2.weight"])
    assert loaded.identity() == model.identity() != _model(e5, 0).identity()


def test_loading_is_strict_about_the_trained_blocks(e5, tmp_path) -> None:
    """A checkpoint whose config claims two trainable blocks lacks block 3: refused, named."""
    out = save_checkpoint(_model(e5, 1), tmp_path / "one", training_config={}, step=1,
                          epoch=1, metrics={})
    meta = json.loads((out / "checkpoint.json").read_text())
    meta["model_config"]["audio_trainable_blocks"] = 2
    (out / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointMismatchError,
                       match=r"missing keys \[.*audio_backbone\.cnn\.conv_block3\."):
        load_checkpoint(out)


def test_frozen_feature_cache_never_serves_a_fine_tuned_tower(e5, tmp_path) -> None:
    model = _model(e5, 1)
    _perturb_top(model, 1)
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(wav, _clips(model.sample_rate)[1].numpy(), model.sample_rate, subtype="FLOAT")
    with pytest.raises(ValueError, match="top blocks"):
        audio_features(model, [wav], tmp_path / "cache")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "a.wav",
                                    "captions": {"eng": ["noise"]}}) + "\n")
    cache = tmp_path / "cache"
    frozen = embed_manifest(_model(e5, 0), read_manifest(manifest), cache_dir=cache).audio
    tuned = embed_manifest(model, read_manifest(manifest), cache_dir=cache).audio
    with torch.no_grad():
        direct = model.embed_audio([_clips(model.sample_rate)[1]]).numpy()
    np.testing.assert_allclose(tuned, direct, atol=1e-6)
    assert not np.allclose(tuned, frozen, atol=1e-3)
    assert len(list((cache / "audio").iterdir())) == 1  # the frozen backbone's store only


@pytest.mark.parametrize(("extra", "message"), [
    (["--audio-trainable-blocks", "5"], "aisfx has 4 conv blocks"),
    (["--audio-trainable-blocks", "-1"], "out of range"),
    (["--audio-trainable-blocks", "1", "--audio", "ced-tiny"], "only the aisfx backbone"),
    (["--audio-trainable-blocks", "1", "--audio-trainable"], "choose one"),
])
def test_bad_block_counts_exit_2(tmp_path: Path, capsys, extra, message) -> None:
    args = ["--train", "t.jsonl", "--val", "v.jsonl", "--strategy", "kcl",
            "--out", str(tmp_path / "run"), *extra]
    assert train_main(args) == 2
    assert message in capsys.readouterr().err


def test_build_model_refuses_blocks_on_ced(e5) -> None:
    with pytest.raises(ValueError, match="needs the aisfx backbone"):
        build_model(ModelConfig(audio="ced-tiny", audio_trainable_blocks=1), text_encoder=e5,
                    pretrained=False)


# --- end to end: atri train, then atri eval and atri embed on its checkpoint -----------------


@pytest.fixture(scope="module")
def run(tiny_corpus: Path, feature_cache: Path, tmp_path_factory,
        first_clips) -> tuple[Path, Path, Path]:
    """(run directory, val, train): one epoch of KCL on 8 clips, English and French, aisfx's
    top block trainable."""
    splits = first_clips(tiny_corpus, "audio-finetune", {"train": 8, "val": 4})
    out = tmp_path_factory.mktemp("audio-finetune") / "run"
    assert train_main([
        "--train", str(splits["train"]), "--val", str(splits["val"]), "--strategy", "kcl",
        "--out", str(out), "--cache-dir", str(feature_cache), "--langs", "eng,fra",
        "--epochs", "1", "--batch-size", "4", "--backbone-lr", "1e-3", "--workers", "0",
        "--audio-trainable-blocks", "1",
    ]) == 0
    return out, splits["val"], splits["train"]


def test_training_moves_the_top_block_only(run) -> None:
    out, _, _ = run
    state = load_file(str(out / "best" / "model.safetensors"))
    pristine = load_aisfx_state()
    blocks = {k.split(".")[2] for k in state if k.startswith("audio_backbone.")}
    assert blocks == {"conv_block4"}
    moved = [k for k, v in pristine.items() if k.startswith("conv_block4")
             and not torch.equal(v, state[f"audio_backbone.cnn.{k}"])]
    assert moved, "the trainable block did not learn"
    assert all(torch.equal(v, state[f"audio_backbone.cnn.{k}"]) for k, v in pristine.items()
               if "running" in k and k.startswith("conv_block4"))  # BatchNorm statistics


def test_eval_and_embed_use_the_trained_block(run, feature_cache: Path, tmp_path) -> None:
    """`atri eval` reproduces the validation metrics the trainer recorded for its best
    checkpoint, and `atri embed`'s audio vectors equal the in-training (cached lower
    blocks) computation of the loaded model."""
    out, val, _ = run
    report = tmp_path / "report"
    assert eval_main(["--checkpoint", str(out / "best"), "--manifest", str(val),
                      "--out", str(report), "--langs", "eng", "fra",
                      "--cache-dir", str(feature_cache), "--tsne-clips", "0"]) == 0
    got = json.loads((report / "metrics.json").read_text())
    recorded = json.loads((out / "best" / "checkpoint.json").read_text())["metrics"]["val"]
    for direction in ("t2a", "a2t"):
        for key, value in recorded[direction]["avg"].items():
            assert got[direction]["avg"][key] == pytest.approx(value, abs=1e-6), (direction, key)
    npz = tmp_path / "emb.npz"
    assert embed_main(["--checkpoint", str(out / "best"), "--manifest", str(val),
                       "--out", str(npz), "--what", "audio", "--cache-dir",
                       str(feature_cache)]) == 0
    vectors = np.load(npz)["audio_vectors"]
    model, _ = load_checkpoint(out / "best")
    manifest = read_manifest(val)
    from atri.training.data.audio_io import load_audio

    waves = [torch.from_numpy(load_audio(manifest.audio_path(r), model.sample_rate))
             for r in manifest]
    model.train()
    training_path = model.embed_audio(waves).detach().numpy()
    model.eval()
    np.testing.assert_allclose(vectors, training_path, atol=1e-5)
    shutil.rmtree(report)


def test_index_build_and_serve_embed_with_the_trained_block(run, make_client, make_settings,
                                                             tmp_path) -> None:
    """`atri index build` on the fine-tuned checkpoint records its backbone hash, and the
    service loading it embeds an uploaded clip with the same tower: the clip finds itself at
    cosine 1, which the frozen tower's vector would not reach."""
    from atri.commands.index import main as index_main
    from atri.training.data.audio_io import load_audio

    out, val, _ = run
    idx = tmp_path / "idx"
    assert index_main(["build", "--checkpoint", str(out / "best"), "--manifest", str(val),
                       "--out", str(idx)]) == 0
    tuned, _ = load_checkpoint(out / "best")
    frozen, _ = load_checkpoint("default")
    assert tuned.identity()["audio_weights_sha256"] != frozen.identity()["audio_weights_sha256"]
    manifest = read_manifest(val)
    target = manifest.records[1]
    wave = torch.from_numpy(load_audio(manifest.audio_path(target), tuned.sample_rate))
    with torch.no_grad():
        pristine = tuned.project_audio(frozen.audio_features([wave]))  # the untrained block
        moved = float((tuned.embed_audio([wave]) * pristine).sum())
    assert moved < 0.99, "the trained block barely moved: this test could not fail"
    with make_client(make_settings(idx)) as client:
        response = client.post("/search/audio", data={"k": "2"}, files={
            "file": ("clip.flac", manifest.audio_path(target).read_bytes())})
    assert response.status_code == 200, response.text
    best = response.json()["similar_clips"][0]
    assert best["id"] == target.id
    assert best["score"] == pytest.approx(1.0, abs=2e-3)  # float16 storage


def _continue(run, out: Path, feature_cache: Path, *extra: str) -> int:
    donor, val, train = run
    return train_main([
        "--train", str(train), "--val", str(val), "--strategy", "kcl", "--out", str(out),
        "--cache-dir", str(feature_cache), "--langs", "eng,fra", "--epochs", "1",
        "--batch-size", "4", "--workers", "0", "--init-from", str(donor / "best"), *extra])


def test_init_from_a_tuned_tower_brings_its_blocks(run, feature_cache: Path, tmp_path) -> None:
    """Heads trained on a tuned top block only fit that block: `--init-from` copies it with
    them (the shipped default is such a checkpoint), so a continued run starts where the
    donor stopped: at a learning rate that cannot move a weight, its checkpoint embeds as
    the donor does."""
    out = tmp_path / "continued"
    assert _continue(run, out, feature_cache, "--audio-trainable-blocks", "1",
                     "--lr", "1e-12", "--backbone-lr", "1e-12") == 0
    donor, _ = load_checkpoint(run[0] / "best")
    started, _ = load_checkpoint(out / "best")
    block = {k: v for k, v in started.audio_backbone.cnn.state_dict().items()
             if k.startswith("conv_block4.")}
    given = donor.audio_backbone.cnn.state_dict()
    pristine = load_aisfx_state()
    for key, value in block.items():  # 1e-12 steps move a weight by less than its rounding
        torch.testing.assert_close(value, given[key], rtol=0, atol=1e-7)
    assert not torch.equal(block["conv_block4.conv2.weight"], pristine["conv_block4.conv2.weight"])
    wave = _clips(donor.sample_rate)[1]
    torch.testing.assert_close(started.embed_audio([wave]), donor.embed_audio([wave]),
                               rtol=0, atol=1e-5)


def test_init_from_a_tuned_tower_refuses_a_frozen_run(run, feature_cache: Path, tmp_path,
                                                      capsys) -> None:
    assert _continue(run, tmp_path / "frozen", feature_cache) == 2
    err = capsys.readouterr().err
    assert "top 1 conv block(s) of aisfx trained" in err and "--audio-trainable-blocks 1" in err
    assert not (tmp_path / "frozen" / "best").exists()
