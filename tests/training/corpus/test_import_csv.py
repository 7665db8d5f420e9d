import csv

import numpy as np
import pytest
import soundfile as sf

from atri.cli import main as atri_main
from atri.training.corpus.import_csv import CsvImportError, clip_id, import_csv
from atri.training.data.manifest import ID_PATTERN, read_manifest


def _wav(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(1600, dtype=np.float32), 16000)


def _csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


AC_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]
AC_ROWS = [  # clip order by first appearance, caption order by audiocap_id
    ["12", "-dashStart1", "30", "a dog barks twice"],
    ["5", "-dashStart1", "30", "a dog barks"],
    ["7", "abcDEF_1234", "0", "rain falls on a roof"],
]
AC_FRA = [
    ["12", "-dashStart1", "30", "un chien aboie deux fois"],
    ["5", "-dashStart1", "30", "un chien aboie"],
    ["7", "abcDEF_1234", "0", "la pluie tombe sur un toit"],
]


@pytest.fixture
def audiocaps(tmp_path):
    _wav(tmp_path / "audio" / "Y-dashStart1.wav")  # the YouTube-dl 'Y' naming
    _wav(tmp_path / "audio" / "sub" / "abcDEF_1234_0.wav")
    eng = _csv(tmp_path / "test.csv", AC_HEADER, AC_ROWS)
    fra = _csv(tmp_path / "test_fra.csv", AC_HEADER, AC_FRA)
    return tmp_path, eng, fra


def test_audiocaps_with_translation(audiocaps):
    root, eng, fra = audiocaps
    out = root / "manifests" / "audiocaps.jsonl"
    import_csv("audiocaps", eng, root / "audio", {"fra": fra}, out)
    manifest = read_manifest(out)  # strict reader: relative audio paths resolve
    first, second = manifest.records
    assert first.captions == {
        "eng": ["a dog barks", "a dog barks twice"],
        "fra": ["un chien aboie", "un chien aboie deux fois"],
    }
    assert ID_PATTERN.fullmatch(first.id) and not first.id.startswith("-")
    assert first.meta["original_name"] == "-dashStart1_30"
    assert second.id == "abcDEF_1234_0"
    assert manifest.audio_path(second).name == "abcDEF_1234_0.wav"


def test_rows_that_do_not_line_up_are_named(audiocaps):
    root, eng, _ = audiocaps
    bad = [list(r) for r in AC_FRA]
    bad[2][1] = "someOtherId"
    fra = _csv(root / "bad_fra.csv", AC_HEADER, bad)
    pattern = r"bad_fra.csv:4: youtube_id='someOtherId' does not line up"
    with pytest.raises(CsvImportError, match=pattern):
        import_csv("audiocaps", eng, root / "audio", {"fra": fra}, root / "m.jsonl")
    short = _csv(root / "short_fra.csv", AC_HEADER, AC_FRA[:2])
    with pytest.raises(CsvImportError, match="2 rows, but"):
        import_csv("audiocaps", eng, root / "audio", {"fra": short}, root / "m.jsonl")


def test_missing_audio_is_named(audiocaps):
    root, eng, _ = audiocaps
    (root / "audio" / "Y-dashStart1.wav").unlink()
    with pytest.raises(CsvImportError, match="no audio file for '-dashStart1_30'"):
        import_csv("audiocaps", eng, root / "audio", {}, root / "m.jsonl")


def test_clotho_names_with_spaces_and_commas(tmp_path):
    names = ["Water drops, cave 01.wav", "bird song.wav"]
    for name in names:
        _wav(tmp_path / "clotho" / name)
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    rows = [[n] + [f"{n} caption {i}" for i in range(1, 6)] for n in names]
    eng = _csv(tmp_path / "clotho.csv", header, rows)
    deu_rows = [[n] + [f"{n} Beschreibung {i}" for i in range(1, 6)] for n in names]
    deu = _csv(tmp_path / "clotho_deu.csv", header, deu_rows)
    out = tmp_path / "clotho.jsonl"
    assert atri_main(["corpus", "import-csv", "--format", "clotho", "--csv", str(eng),
                      "--audio-dir", str(tmp_path / "clotho"), "--translation", f"deu={deu}",
                      "--out", str(out)]) == 0
    records = read_manifest(out).records
    assert [r.meta["original_name"] for r in records] == names
    assert all(ID_PATTERN.fullmatch(r.id) for r in records)
    assert records[0].captions["deu"][4] == "Water drops, cave 01.wav Beschreibung 5"
    assert len(records[0].captions["eng"]) == 5


def test_cli_errors_exit_2(tmp_path, capsys):
    missing = str(tmp_path / "x.csv")
    assert atri_main(["corpus", "import-csv", "--format", "clotho", "--csv", missing,
                      "--audio-dir", str(tmp_path), "--out", str(tmp_path / "m.jsonl")]) == 2
    assert "x.csv: CSV not found" in capsys.readouterr().err
    assert atri_main(["corpus", "import-csv", "--format", "clotho", "--csv", "a.csv",
                      "--audio-dir", ".", "--translation", "fra", "--out", "m.jsonl"]) == 2


def test_clip_id_is_stable_and_distinct():
    assert clip_id("plain_name-1.wav") == "plain_name-1.wav"
    assert clip_id("-abc") != clip_id("_abc") and clip_id("-abc") == clip_id("-abc")
    assert ID_PATTERN.fullmatch(clip_id("a, b c/d.wav"))
