"""scripts/warm_features.py fills exactly the caches `atri train` and `atri eval` read:
every clip of every split (audio) and every caption of the asked languages (text)."""

from __future__ import annotations

import pytest

from atri.training.data.features import AudioFeatureStore, backbone_identity, clip_key
from atri.training.data.manifest import read_manifest
from atri.training.data.text_cache import cache_path, read_rows, text_key
from atri.training.encoders.model import ModelConfig, build_model
from atri.training.encoders.text_encoder import build_text_encoder

SPLITS = ("train", "val", "test", "test-xfont", "test-unseen")


@pytest.fixture(scope="module")
def warm(load_script):
    return load_script("warm_features").main


def test_text_part_caches_every_caption_of_the_asked_languages(warm, tiny_corpus, tmp_path):
    assert warm([str(tiny_corpus), "--part", "text", "--langs", "cat",
                 "--cache-dir", str(tmp_path)]) == 0
    encoder = build_text_encoder("e5-small")
    cached = read_rows(cache_path(tmp_path / "text", encoder, "cat"), encoder.dim)
    captions = {c for s in SPLITS for r in read_manifest(tiny_corpus / f"{s}.jsonl")
                for c in r.captions["cat"]}
    assert {text_key(c) for c in captions} == set(cached)
    assert not cache_path(tmp_path / "text", encoder, "eng").exists()  # not asked for


def test_audio_part_caches_every_clip_of_every_split(warm, tiny_corpus, tmp_path):
    """An empty cache of its own (~30 s of aisfx), so the script alone must fill it."""
    assert warm([str(tiny_corpus), "--part", "audio", "--cache-dir", str(tmp_path)]) == 0
    model = build_model(ModelConfig())
    found = AudioFeatureStore(tmp_path, backbone_identity(model), model.audio_dim).read()
    for split in SPLITS:
        manifest = read_manifest(tiny_corpus / f"{split}.jsonl")
        missing = [r.id for r in manifest if clip_key(manifest.audio_path(r)) not in found]
        assert not missing, (split, missing[:5])


def test_unknown_language_is_refused_by_name(warm, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        warm([str(tmp_path), "--part", "text", "--langs", "eng,xx"])
    assert exit_info.value.code == 2
    assert "unknown language code(s) ['xx']" in capsys.readouterr().err


def test_text_part_reads_the_real_recordings_splits(warm, tiny_corpus, tmp_path):
    """A real-recordings corpus has test-xpkg and test-zeroshot manifests, which the demo
    corpus has not: their captions must be cached too."""
    corpus = tmp_path / "sfx"
    corpus.mkdir()
    (corpus / "audio").symlink_to(tiny_corpus / "audio")
    (corpus / "test-zeroshot.jsonl").write_text((tiny_corpus / "test.jsonl").read_text())
    assert warm([str(corpus), "--part", "text", "--langs", "cat",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    encoder = build_text_encoder("e5-small")
    cached = read_rows(cache_path(tmp_path / "cache" / "text", encoder, "cat"), encoder.dim)
    captions = {c for r in read_manifest(corpus / "test-zeroshot.jsonl") for c in r.captions["cat"]}
    assert captions and {text_key(c) for c in captions} <= set(cached)
