"""`atri embed` and the streaming embedder: batching, caption grids and the .npz layout
against a fake model (fast), then `main` on the tiny corpus with a real model."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from atri.commands.embed import main
from atri.training.data.manifest import ClipRecord, ManifestError, read_manifest, write_manifest
from atri.training.evaluation.embed import (
    check_langs,
    embed_audio,
    embed_manifest,
    manifest_captions,
    npz_arrays,
)

SR = 16_000
DIM = 8


class FakeModel:
    """Deterministic unit vectors: audio from its samples, text from a hash of (lang,
    text), identity heads. Records every call, so tests can see the batches."""

    config = SimpleNamespace(embed_dim=DIM, audio_trains=False, text_trains=False)
    sample_rate = SR

    def __init__(self) -> None:
        self.audio_calls: list[list[int]] = []
        self.text_calls: list[tuple[str, int]] = []

    def eval(self) -> FakeModel:
        return self

    def audio_features(self, waves: list[torch.Tensor]) -> torch.Tensor:
        self.audio_calls.append([len(w) for w in waves])
        return torch.stack([torch.stack([w[k::DIM].sum() for k in range(DIM)]) for w in waves])

    def text_features(self, texts: list[str], lang: str) -> torch.Tensor:
        self.text_calls.append((lang, len(texts)))
        return torch.stack([_text_vector(t, lang) for t in texts])

    def project_audio(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(feats + 1e-3, dim=1)

    def project_text(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def _text_vector(text: str, lang: str) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(f"{lang}:{text}".encode()).digest()[:4], "little")
    v = torch.randn(DIM, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _corpus(tmp_path: Path, lengths: list[float], captions: list[dict]) -> Path:
    records = []
    rng = np.random.default_rng(0)
    for i, (seconds, caps) in enumerate(zip(lengths, captions, strict=True)):
        name = f"c{i}.wav"
        sf.write(tmp_path / name, 0.1 * rng.standard_normal(int(seconds * SR)), SR)
        records.append(ClipRecord(f"c{i}", name, caps))
    write_manifest(tmp_path / "m.jsonl", records)
    return tmp_path / "m.jsonl"


FULL = {"eng": ["a e0", "a e1"], "fra": ["a f0", "a f1"]}


def test_audio_streams_bounded_batches_of_any_lengths(tmp_path):
    path = _corpus(tmp_path, [1, 1, 1, 0.5, 1], [FULL] * 5)
    model = FakeModel()
    audio = embed_audio(model, read_manifest(path), batch_size=2)
    assert model.audio_calls == [[SR, SR], [SR, SR // 2], [SR]]
    wave = torch.from_numpy(sf.read(tmp_path / "c3.wav", dtype="float32")[0])
    expected = model.project_audio(model.audio_features([wave]))[0]
    np.testing.assert_allclose(audio[3], expected.numpy(), rtol=1e-5)


def test_manifest_captions_mask_missing_languages_and_slots(tmp_path):
    caps = [FULL, {"eng": ["b e0"]}, {"fra": ["c f0", "c f1", "c f2"]}]
    manifest = read_manifest(_corpus(tmp_path, [0.2] * 3, caps))
    captions, present = manifest_captions(manifest, ["eng", "fra"])
    assert captions["eng"] == [["a e0", "a e1"], ["b e0"], []]
    np.testing.assert_array_equal(present["eng"], [[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(present["fra"], [[1, 1, 0], [0, 0, 0], [1, 1, 1]])


def test_embed_manifest_places_every_caption_in_its_slot(tmp_path):
    caps = [FULL, {"eng": ["b e0"]}, {"fra": ["c f0", "c f1", "c f2"]}]
    manifest = read_manifest(_corpus(tmp_path, [0.2] * 3, caps))
    model = FakeModel()
    audio, text, present, captions = embed_manifest(model, manifest, text_batch=2)
    assert audio.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1, rtol=1e-5)
    for lang in ("eng", "fra"):
        assert text[lang].shape == (3, 3, DIM)
        for i, texts in enumerate(captions[lang]):
            for j, t in enumerate(texts):
                np.testing.assert_allclose(text[lang][i, j], _text_vector(t, lang), rtol=1e-6)
        assert not text[lang][~present[lang]].any()
    assert max(n for _, n in model.text_calls) <= 2  # bounded batches


def test_npz_arrays_rows_match_slots(tmp_path):
    caps = [FULL, {"eng": ["b e0"]}]
    manifest = read_manifest(_corpus(tmp_path, [0.2] * 2, caps))
    emb = embed_manifest(FakeModel(), manifest)
    arrays = npz_arrays(manifest, emb, {"x": 1})
    assert list(arrays["audio_ids"]) == ["c0", "c1"]
    rows = list(zip(arrays["text_ids"], arrays["text_lang"], arrays["text_caption_index"],
                    arrays["text"], strict=True))
    assert rows == [("c0", "eng", 0, "a e0"), ("c0", "eng", 1, "a e1"), ("c1", "eng", 0, "b e0"),
                    ("c0", "fra", 0, "a f0"), ("c0", "fra", 1, "a f1")]
    for k, (_, lang, _, t) in enumerate(rows):
        np.testing.assert_allclose(arrays["text_vectors"][k], _text_vector(t, lang), rtol=1e-6)
    assert json.loads(str(arrays["meta"])) == {"x": 1}


def test_check_langs_rejects_unknown_repeated_and_absent(tmp_path):
    manifest = read_manifest(_corpus(tmp_path, [0.2], [{"eng": ["x"]}]))
    assert check_langs(manifest, None) == ["eng"]
    for langs, problem in ((["eng", "xx"], "unknown language code(s) ['xx']"),
                           (["eng", "eng"], "given twice"),
                           (["fra"], "no clip has captions in ['fra']")):
        with pytest.raises(ManifestError, match=re.escape(problem)):
            check_langs(manifest, langs)


# --- main() on the tiny corpus with a real model ---------------------------------------


@pytest.fixture(scope="module")
def checkpoint(make_checkpoint) -> Path:
    """The default architecture, heads seeded."""
    return make_checkpoint(0, {"seed": 7})


def _main(checkpoint: Path, manifest: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(["--checkpoint", str(checkpoint), "--manifest", str(manifest), "--out", str(out),
                 "--cache-dir", str(cache), *extra])


def test_main_text_subset(tiny_corpus, checkpoint, feature_cache, tmp_path):
    from atri.training.encoders.checkpoint import load_checkpoint

    out = tmp_path / "t.npz"
    manifest = tiny_corpus / "test.jsonl"
    assert _main(checkpoint, manifest, out, feature_cache, "--what", "text",
                 "--langs", "fra", "jpn") == 0
    data = np.load(out, allow_pickle=False)
    assert "audio_vectors" not in data
    records = {r.id: r for r in read_manifest(manifest)}
    assert data["text_vectors"].shape[0] == 2 * sum(r.n_captions() for r in records.values())
    assert list(dict.fromkeys(data["text_lang"])) == ["fra", "jpn"]
    np.testing.assert_allclose(np.linalg.norm(data["text_vectors"], axis=1), 1, rtol=1e-4)
    model, _ = load_checkpoint(checkpoint)
    for k in (0, len(data["text"]) - 1):  # a row is its caption, embedded without the cache
        clip, lang = str(data["text_ids"][k]), str(data["text_lang"][k])
        j = int(data["text_caption_index"][k])
        assert data["text"][k] == records[clip].captions[lang][j]
        with torch.inference_mode():
            direct = model.embed_text([str(data["text"][k])], lang)[0].numpy()
        np.testing.assert_allclose(data["text_vectors"][k], direct, atol=1e-5)
    meta = json.loads(str(data["meta"]))
    assert meta["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert meta["identity"] == model.identity()


def test_main_audio_only(tiny_corpus, checkpoint, feature_cache, tmp_path):
    from atri.training.data.audio_io import load_audio
    from atri.training.encoders.checkpoint import load_checkpoint

    out = tmp_path / "a.npz"
    manifest = read_manifest(tiny_corpus / "test.jsonl")
    assert _main(checkpoint, manifest.path, out, feature_cache, "--what", "audio") == 0
    data = np.load(out, allow_pickle=False)
    assert list(data["audio_ids"]) == [r.id for r in manifest]
    assert "text_vectors" not in data
    vectors = data["audio_vectors"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-4)
    assert np.unique(vectors.round(5), axis=0).shape[0] == len(vectors)  # no row repeated
    model, _ = load_checkpoint(checkpoint)
    k = len(manifest) - 1  # the last clip, embedded on its own without the cache
    wave = torch.from_numpy(load_audio(manifest.audio_path(manifest.records[k]), model.sample_rate))
    with torch.inference_mode():
        direct = model.embed_audio([wave])[0].numpy()
    np.testing.assert_allclose(vectors[k], direct, atol=1e-5)


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"--langs": ["eng", "klingon"]}, "unknown language code(s) ['klingon']"),
        ({"--manifest": ["/nonexistent/m.jsonl"]}, "manifest not found"),
        ({"--checkpoint": ["/nonexistent/ckpt"]}, "checkpoint not found"),
        ({"--out": ["x.txt"]}, "expected a .npz file"),
    ],
)
def test_main_bad_input_exits_2_naming_it(tiny_corpus, tmp_path, capsys, override, problem):
    # the checkpoint is a plain folder: every input check must come before loading it
    args = {"--checkpoint": [str(tmp_path)], "--manifest": [str(tiny_corpus / "test.jsonl")],
            "--out": [str(tmp_path / "e.npz")]} | override
    assert main([x for flag, values in args.items() for x in (flag, *values)]) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "e.npz").exists()


def test_cache_defaults_to_the_trainers_and_no_cache_writes_none(
    tiny_corpus, checkpoint, tmp_path, monkeypatch
):
    """Without --cache-dir, eval/embed reuse the cache `atri train` fills
    ($XDG_CACHE_HOME/atri/features); --no-cache reads and writes none, same vectors."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    manifest = tiny_corpus / "val.jsonl"
    common = ["--checkpoint", str(checkpoint), "--manifest", str(manifest), "--what", "text",
              "--langs", "eng"]
    assert main([*common, "--out", str(tmp_path / "cached.npz")]) == 0
    cache = tmp_path / "xdg" / "atri" / "features" / "text"
    assert [p.name for p in cache.glob("*/eng.npz")] == ["eng.npz"]
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    assert main([*common, "--no-cache", "--out", str(tmp_path / "fresh.npz")]) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before
    cached, fresh = np.load(tmp_path / "cached.npz"), np.load(tmp_path / "fresh.npz")
    np.testing.assert_allclose(cached["text_vectors"], fresh["text_vectors"], atol=1e-5)
