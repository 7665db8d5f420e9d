import json
from pathlib import Path

import pytest

from atri.training.data.manifest import (
    ClipRecord,
    ManifestError,
    read_manifest,
    require_captions,
    write_manifest,
)

CAPS = {"eng": ["a flute", "flute notes"], "fra": ["une flûte", "des notes de flûte"]}


def _write(tmp_path: Path, lines: list[str], audio: tuple[str, ...] = ("a.flac", "b.flac")) -> Path:
    for name in audio:
        (tmp_path / name).write_bytes(b"")
    path = tmp_path / "m.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _line(**fields) -> str:
    obj = {"id": "a", "audio": "a.flac", "captions": CAPS} | fields
    return json.dumps(obj, ensure_ascii=False)


def test_round_trip_preserves_records(tmp_path):
    (tmp_path / "a.flac").write_bytes(b"")
    records = [ClipRecord("a", "a.flac", CAPS, {"instrument": "flute", "n": 3, "ok": True})]
    write_manifest(tmp_path / "m.jsonl", records)
    manifest = read_manifest(tmp_path / "m.jsonl")
    assert manifest.records == records
    assert manifest.audio_path(records[0]) == tmp_path / "a.flac"
    assert manifest.records[0].n_captions() == 2


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "bad JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"audio": "a.flac", "captions": {}}), "missing field 'id'"),
        (_line(id="-starts-with-dash"), "field 'id'"),
        (_line(id="has space"), "field 'id'"),
        (_line(captions={"xx": ["?"]}), "unknown language code 'xx'"),
        (_line(captions={"eng": ["a", "b"], "fra": ["c"]}), "unequal caption counts"),
        (_line(captions={"eng": [""]}), "captions.eng[0] must be a non-empty string"),
        (_line(meta={"x": [1]}), "meta.x"),
        (_line(extra=1), "unknown field"),
        (_line(audio="missing.flac"), "audio file not found"),
    ],
)
def test_errors_name_file_line_and_problem(tmp_path, line, problem):
    path = _write(tmp_path, [_line(id="ok"), line])
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert f"{path}:2" in str(err.value)
    assert problem in str(err.value)


def test_duplicate_id_names_both_lines(tmp_path):
    path = _write(tmp_path, [_line(), _line(audio="b.flac")])
    with pytest.raises(ManifestError, match=r"m.jsonl:2: duplicate id 'a' \(first on line 1\)"):
        read_manifest(path)


def test_blank_line_inside_is_an_error_but_trailing_newline_is_not(tmp_path):
    path = _write(tmp_path, [_line(), "", _line(id="b", audio="b.flac")])
    with pytest.raises(ManifestError, match="m.jsonl:2: empty line"):
        read_manifest(path)
    path = _write(tmp_path, [_line(), _line(id="b", audio="b.flac")])
    assert [r.id for r in read_manifest(path)] == ["a", "b"]


def test_clip_without_captions_is_indexable_but_not_trainable(tmp_path):
    path = _write(tmp_path, [_line(), _line(id="bare", audio="b.flac", captions={})])
    manifest = read_manifest(path)
    assert manifest.records[1].captions == {}
    with pytest.raises(ManifestError, match="1 clip\\(s\\) have no captions: bare"):
        require_captions(manifest)


def test_writer_refuses_invalid_records_and_keeps_old_file(tmp_path):
    (tmp_path / "a.flac").write_bytes(b"")
    target = tmp_path / "m.jsonl"
    write_manifest(target, [ClipRecord("a", "a.flac", CAPS)])
    before = target.read_bytes()
    with pytest.raises(ManifestError, match="duplicate id"):
        write_manifest(target, [ClipRecord("a", "a.flac", CAPS), ClipRecord("a", "a.flac", CAPS)])
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
