"""`atri index build --vocabulary`: labels in the caption index that belong to no clip —
the file format and its errors, how the labels are stored (compatible rows, meta.json),
that live changes and compaction keep them, and a build of a folder of audio with the
default vocabulary and the default checkpoint."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from atri.commands import index as cli
from atri.index.store import IndexStore
from atri.index.validate import validate
from atri.index.vocabulary import VocabularyError, load_vocabulary, read_vocabulary
from atri.training.data.manifest import ClipRecord
from atri.training.languages import LANGS

LABELS = {
    "fra": ["chien qui aboie", "verre brisé", "ｐｌｕｉｅ "],  # full-width: NFKC'd, stripped
    "eng": ["dog barking", "glass breaking", "rain", "dog barking"],  # repeated: once
}


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def run_build(monkeypatch, model, *args: str) -> int:
    monkeypatch.setattr(cli, "open_checkpoint", lambda spec: (model, {"weights_sha256": "w1"}))
    return cli.main(["build", "--checkpoint", "stub", *args])


# --- the file --------------------------------------------------------------------------


def test_file_labels_are_normalised_distinct_and_in_language_order(tmp_path) -> None:
    vocab = read_vocabulary(write_json(tmp_path / "v.json", LABELS))
    assert list(vocab.labels) == ["eng", "fra"]  # LANGS order, whatever the file's
    assert vocab.labels["eng"] == ["dog barking", "glass breaking", "rain"]
    assert vocab.labels["fra"][2] == "pluie"
    assert vocab.name == str((tmp_path / "v.json").resolve())
    again = read_vocabulary(write_json(tmp_path / "w.json", dict(reversed(LABELS.items()))))
    assert again.sha256 == vocab.sha256  # a hash of the labels, not of the file
    assert vocab.meta() == {"name": vocab.name, "sha256": vocab.sha256,
                            "labels": {"eng": 3, "fra": 3}}  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", r"v\.json:1: bad JSON"),
        ("[]", r"v\.json: expected a JSON object"),
        ("{}", r"v\.json: expected a JSON object .* an empty one"),
        ('{"en": ["dog"]}', r"v\.json: field 'en': not a language code \(one of eng fra"),
        ('{"eng": "dog"}', r"v\.json: field 'eng': expected a non-empty list"),
        ('{"eng": []}', r"v\.json: field 'eng': expected a non-empty list"),
        ('{"eng": ["dog", 3]}', r"v\.json: field 'eng'\[1\]: expected a non-empty string, got 3"),
        ('{"eng": ["  "]}', r"v\.json: field 'eng'\[0\]: expected a non-empty string"),
    ],
)
def test_bad_files_name_file_and_field(tmp_path, content, message) -> None:
    (tmp_path / "v.json").write_text(content, encoding="utf-8")
    with pytest.raises(VocabularyError, match=message):
        load_vocabulary(tmp_path / "v.json")


def test_bad_vocabulary_exits_2_before_the_model_loads(
    tmp_path, monkeypatch, capsys, make_sounds
) -> None:
    make_sounds(tmp_path / "clips")
    loaded = []
    monkeypatch.setattr(cli, "open_checkpoint", lambda spec: loaded.append(spec))
    args = ["build", "--checkpoint", "x", "--audio-dir", str(tmp_path / "clips"),
            "--out", str(tmp_path / "idx")]  # fmt: skip
    assert cli.main([*args, "--vocabulary", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: not found (or give 'default')" in capsys.readouterr().err
    write_json(tmp_path / "bad.json", {"eng": ["ok"], "xx": ["?"]})
    assert cli.main([*args, "--vocabulary", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: field 'xx': not a language code" in capsys.readouterr().err
    assert loaded == [] and not (tmp_path / "idx" / "CURRENT").exists()


# --- storage, live changes, compaction (stand-in model) ------------------------------------


@pytest.fixture
def labelled(tmp_path, monkeypatch, kit, make_sounds) -> tuple[Path, Path]:
    """A --audio-dir index (no captions) with the LABELS vocabulary."""
    make_sounds(tmp_path / "clips")
    vocab = write_json(tmp_path / "v.json", LABELS)
    out = tmp_path / "idx"
    args = ["--audio-dir", str(tmp_path / "clips"), "--out", str(out), "--vocabulary", str(vocab)]
    assert run_build(monkeypatch, kit.StubModel(), *args) == 0
    return out, vocab


def _caption_rows(index: Path, lang: str) -> list[dict]:
    current = (index / "CURRENT").read_text().strip()
    path = index / "versions" / current / "captions" / f"{lang}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_labels_are_captions_of_no_clip(labelled, kit) -> None:
    out, vocab = labelled
    store = IndexStore.open(out)
    assert store.meta["vocabulary"] == read_vocabulary(vocab).meta()
    assert store.languages == ["eng", "fra"] and store.captions_indexed == 6
    assert _caption_rows(out, "eng") == [
        {"text": t, "clip_ids": [], "vocabulary": True}
        for t in ("dog barking", "glass breaking", "rain")
    ]
    query = kit.caption_vector("verre brisé")[None]
    text, score, clips = store.search_captions(query, "fra", 3)[0][0]
    assert (text, clips) == ("verre brisé", []) and score == pytest.approx(1.0, abs=2e-3)
    assert len(store.search_captions(query, "fra", 10)[0]) == 3
    assert validate(out) == []


def test_live_changes_and_compaction_keep_the_labels(labelled, kit) -> None:
    out, vocab = labelled
    store = IndexStore.open(out)
    query = kit.caption_vector("rain")[None]
    record = ClipRecord("new", "/data/new.wav", {"eng": ["rain", "a new caption"]})
    vectors = np.stack([kit.caption_vector(t) for t in record.captions["eng"]])
    store.add_clip(record, kit.unit(np.random.default_rng(1), 1)[0], {"eng": vectors})
    assert store.search_captions(query, "eng", 1)[0][0][2] == ["new"]  # the label gains it
    store.delete_clip("new")
    assert store.search_captions(query, "eng", 1)[0][0][::2] == ("rain", [])  # not dead
    store.add_clip(record, kit.unit(np.random.default_rng(1), 1)[0], {"eng": vectors})
    assert store.compact() == 2
    rows = {r["text"]: r for r in _caption_rows(out, "eng")}
    assert rows["rain"] == {"text": "rain", "clip_ids": ["new"], "vocabulary": True}
    assert rows["a new caption"] == {"text": "a new caption", "clip_ids": ["new"]}
    assert IndexStore.open(out).meta["vocabulary"] == read_vocabulary(vocab).meta()
    store.delete_clip("new")
    assert store.compact() == 3
    assert [r["text"] for r in _caption_rows(out, "eng")] == LABELS["eng"][:3]
    assert validate(out) == []


def test_a_label_some_clip_carries_is_one_row_with_its_clips(
    tmp_path, monkeypatch, kit, make_sounds
) -> None:
    from atri.training.data.manifest import write_manifest

    paths = make_sounds(tmp_path / "clips")
    records = [
        ClipRecord(f"c{i}", str(p), {"eng": ["rain", f"clip {i}"]}) for i, p in enumerate(paths)
    ]
    write_manifest(tmp_path / "m.jsonl", records)
    vocab = write_json(tmp_path / "v.json", LABELS)
    out = tmp_path / "idx"
    args = ["--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--vocabulary", str(vocab)]
    assert run_build(monkeypatch, kit.StubModel(), *args) == 0
    rows = _caption_rows(out, "eng")
    assert [r["text"] for r in rows] == ["rain", "clip 0", "clip 1", "clip 2", "dog barking",
                                         "glass breaking"]  # fmt: skip
    assert rows[0] == {"text": "rain", "clip_ids": ["c0", "c1", "c2"], "vocabulary": True}
    assert rows[1] == {"text": "clip 0", "clip_ids": ["c0"]}  # no flag: rows as before
    assert validate(out) == []


def test_validate_flags_a_captionless_row_that_is_no_label(labelled) -> None:
    out, _ = labelled
    current = (out / "CURRENT").read_text().strip()
    meta_path = out / "versions" / current / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["vocabulary"]["labels"]["eng"] = 2
    meta_path.write_text(json.dumps(meta))
    assert any("3 vocabulary labels, meta.json's vocabulary has 2" in p for p in validate(out))


# --- the default vocabulary with the default checkpoint ------------------------------------


def test_default_vocabulary_in_all_languages(vocabulary_index) -> None:
    from atri.training.corpus.sfx.lexicon import vocabulary

    index, _ = vocabulary_index
    store = IndexStore.open(index)
    assert store.meta["vocabulary"]["name"] == "default"
    assert store.meta["checkpoint"]["path"] == "default" and len(store) == 3
    assert store.languages == sorted(LANGS)
    for lang in LANGS:
        expected = [unicodedata.normalize("NFKC", t).strip() for t in vocabulary(lang)]
        rows = _caption_rows(index, lang)
        assert [r["text"] for r in rows] == list(dict.fromkeys(expected))
        assert all(r["clip_ids"] == [] and r["vocabulary"] for r in rows)
        assert store.meta["vocabulary"]["labels"][lang] == len(rows) > 100
    assert validate(index) == []
