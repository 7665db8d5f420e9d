"""SONAR text encoder through the real fairseq2 loading path, on a tiny random model.

Needs the separate environment from scripts/sonar_env.sh:
    ~/.cache/atri/sonar-venv/bin/pytest -m sonar tests/training/test_text_encoder_sonar.py
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.sonar

# The caption languages, written in their own scripts so the tokenizer covers them.
CORPUS = [
    "a dog barks loudly in the street",
    "un chien aboie fort dans la rue",
    "ein Hund bellt laut auf der Straße",
    "un perro ladra fuerte en la calle",
    "een hond blaft luid op straat",
    "un gos borda fort al carrer",
    "犬が通りで大きな声で吠えている",
    "一只狗在街上大声叫",
    "rain falls on the roof while a piano plays softly",
]


@pytest.fixture(scope="module")
def tiny_sonar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A 2-layer, 32-d SONAR text encoder + NLLB-style SentencePiece model on disk."""
    pytest.importorskip("sonar", reason="needs scripts/sonar_env.sh's environment")
    import sentencepiece as spm
    from fairseq2.models.nllb import get_nllb_tokenizer_hub
    from sonar.models.sonar_text import get_sonar_text_encoder_hub

    from atri.training.encoders.text_encoder import SONAR_CARD
    from atri.training.languages import LANGUAGES

    folder = tmp_path_factory.mktemp("tiny_sonar")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=150,
        hard_vocab_limit=False,
        character_coverage=1.0,
        model_type="unigram",
        minloglevel=2,
    )
    langs = sorted(info.nllb[0] for info in LANGUAGES.values())
    tokenizer_config = dataclasses.replace(
        get_nllb_tokenizer_hub().get_tokenizer_config(SONAR_CARD),
        langs=langs,
        default_lang="eng_Latn",
    )
    vocab = get_nllb_tokenizer_hub().load_custom_tokenizer(
        folder / "tokenizer.model", tokenizer_config
    )
    encoder_overrides = {
        "model_dim": 32,
        "ffn_inner_dim": 64,
        "num_encoder_layers": 2,
        "num_decoder_layers": 2,
        "num_encoder_attn_heads": 4,
        "num_decoder_attn_heads": 4,
        "max_seq_len": 64,
        "vocab_info": dataclasses.asdict(vocab.vocab_info),
    }
    hub = get_sonar_text_encoder_hub()
    config = dataclasses.replace(
        hub.get_arch_config("basic"),
        **{**encoder_overrides, "vocab_info": vocab.vocab_info},
    )
    torch.manual_seed(0)
    model = hub.create_new_model(config)
    torch.save({"model": model.state_dict()}, folder / "encoder.pt")
    spec = {
        "arch": "basic",
        "encoder": encoder_overrides,
        "tokenizer": {"langs": langs, "default_lang": "eng_Latn"},
    }
    (folder / "config.json").write_text(json.dumps(spec))
    return folder, model


def test_sonar_loads_checkpoint_and_encodes(tiny_sonar: tuple[Path, torch.nn.Module]) -> None:
    from atri.training.encoders.text_encoder import (
        SonarTextEncoder,
        TextEncoder,
        build_text_encoder,
    )

    folder, saved = tiny_sonar
    encoder = build_text_encoder(f"sonar:{folder}")
    assert isinstance(encoder, SonarTextEncoder) and isinstance(encoder, TextEncoder)
    assert (encoder.name, encoder.dim, encoder.trainable) == ("sonar", 32, False)
    assert encoder.version.startswith("sonar-space-0.")

    loaded = encoder._pipeline.model.state_dict()
    assert loaded.keys() == saved.state_dict().keys()
    for key, value in saved.state_dict().items():  # the weights came from encoder.pt
        assert torch.equal(loaded[key], value), key

    texts = CORPUS[:3]
    out = encoder.encode(texts, "eng")
    assert out.shape == (3, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(encoder.encode(texts, "eng"), out, atol=0, rtol=0)
    singles = torch.cat([encoder.encode([t], "eng") for t in texts])
    torch.testing.assert_close(singles, out, atol=1e-5, rtol=0)  # padding does not leak


def test_sonar_language_token_reaches_the_model(tiny_sonar: tuple[Path, torch.nn.Module]) -> None:
    from atri.training.encoders.text_encoder import build_text_encoder
    from atri.training.languages import LANGS

    encoder = build_text_encoder(f"sonar:{tiny_sonar[0]}")
    vectors = torch.cat([encoder.encode([CORPUS[0]], lang) for lang in LANGS])
    assert vectors.shape == (8, 32)
    # each language prepends its own __xxx_Xxxx__ token, so no two rows coincide
    distance = torch.cdist(vectors, vectors) + torch.eye(8)
    assert distance.min() > 1e-4
    with pytest.raises(ValueError, match="unsupported language"):
        encoder.encode(["hello"], "eng_Latn")


def test_sonar_missing_files(tmp_path: Path) -> None:
    pytest.importorskip("sonar", reason="needs scripts/sonar_env.sh's environment")
    from atri.training.encoders.text_encoder import build_text_encoder

    with pytest.raises(FileNotFoundError, match="encoder.pt"):
        build_text_encoder(f"sonar:{tmp_path}")


def test_sonar_raw_keeps_the_unnormalised_vectors(tiny_sonar: tuple[Path, torch.nn.Module]) -> None:
    """ML-CLAP's text_proj was trained on SONAR's raw sentence embeddings: `sonar-raw`
    gives exactly those, `sonar` their unit-norm version."""
    from atri.training.encoders.text_encoder import build_text_encoder

    folder, _ = tiny_sonar
    raw = build_text_encoder(f"sonar-raw:{folder}")
    unit = build_text_encoder(f"sonar:{folder}")
    assert raw.name == "sonar-raw"
    texts = CORPUS[:3]
    raw_out, unit_out = raw.encode(texts, "fra"), unit.encode(texts, "fra")
    assert not torch.allclose(raw_out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(raw_out / raw_out.norm(dim=1, keepdim=True), unit_out)
