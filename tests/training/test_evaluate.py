"""`atri eval`: report rendering on hand examples, then `main` on the tiny corpus with a
real model, its metrics.json cross-checked against `atri embed`'s vectors."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from atri.commands import embed
from atri.commands import eval as evaluate
from atri.training.evaluation.metrics import evaluate_embeddings
from atri.training.evaluation.report import (
    RankCase,
    rank_case_table,
    rank_cases,
    render_report,
    select_cases,
    tsne_points,
)

LANGS3 = ["eng", "fra", "deu"]
METRIC_KEYS = {"R@1", "R@5", "R@10", "mAP@10", "medR", "meanR"}


def _flat(tree: dict, prefix: str = "") -> dict[str, float]:
    """{"t2a": {"eng": {"R@1": x}}} -> {"t2a/eng/R@1": x}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- report.py ----------------------------------------------------------------------


def test_select_cases_least_and_most_consistent():
    nan = np.nan
    # slots (clip, j): (0,0) ranks 1,1,1 | (0,1) 2,2,2 | (1,0) 1,5,9 | (1,1) absent in deu
    ranks = {
        "eng": np.array([[1, 2], [1, 3]], float),
        "fra": np.array([[1, 2], [5, 3]], float),
        "deu": np.array([[1, 2], [9, nan]], float),
    }
    # least: (1,0) variance 32/3; most: var 0 for (0,0) and (0,1), the worse mean wins
    assert select_cases(ranks) == [("least consistent", 1, 0), ("most consistent", 0, 1)]
    assert select_cases({"eng": np.full((2, 1), nan)}) == []


def test_rank_case_table_lists_every_language_and_the_spread():
    ranks = {"eng": np.array([[1.0], [4.0]]), "fra": np.array([[3.0], [np.nan]])}
    captions = {"eng": [["a flute"], ["a harp"]], "fra": [["une flûte"], []]}
    cases = rank_cases(ranks, ["c0", "c1"], captions, [("x", 0, 0), ("y", 1, 0)])
    assert cases[0] == RankCase("x", "c0", 0, "a flute", {"eng": 1, "fra": 3})
    assert cases[1].ranks == {"eng": 4}
    text = "\n".join(rank_case_table(cases, ["eng", "fra"]))
    assert "| eng | 1 | 4 |" in text and "| fra | 3 | – |" in text
    assert "| variance | 1.00 | 0.00 |" in text and "| std | 1.00 | 0.00 |" in text
    assert "“a flute”" in text


def _synthetic(n: int = 12, c: int = 2, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    audio = unit(rng.standard_normal((n, dim)))
    text = {lang: unit(audio[:, None, :] + 0.8 * rng.standard_normal((n, c, dim)))
            for lang in LANGS3}
    present = {lang: np.ones((n, c), bool) for lang in LANGS3}
    present["deu"][0, 1] = False
    return audio, text, present


def test_render_report_has_atri_tables_with_the_metrics():
    audio, text, present = _synthetic()
    captions = {lang: [["same"] * 2] * 12 for lang in LANGS3}  # one query, 12 clips relevant
    metrics = evaluate_embeddings(audio, text, present, LANGS3, captions)
    metrics |= {"checkpoint": "ck", "manifest": "m.jsonl",
                "provenance": {"commit": "abc", "dirty": False, "manifest_sha256": "f00"}}
    report = render_report(metrics, [], "tsne.png")
    for title in ("Table 1", "Table 2", "Table 3", "Table 5"):
        assert title in report
    assert "several relevant clips" in report
    assert "all of them relevant): " + ", ".join(f"{x} 1" for x in LANGS3) + "." in report
    lines = report.splitlines()
    t2a_r1 = metrics["t2a"]["fra"]["R@1"]
    assert any(line.startswith(f"| fra | {t2a_r1:.2f} |") for line in lines)
    assert f"| deu | {metrics['gap']['deu']:.3f} | {metrics['dis']['deu']:.3f} |" in report
    assert f"| T2A | {metrics['mrv_var']['t2a']:.2f} | {metrics['mrv_std']['t2a']:.2f} |" in report
    assert "![t-SNE](tsne.png)" in report


def test_tsne_points_pick_complete_slots():
    audio, text, present = _synthetic(n=12)
    present["fra"][3] = False  # clip 3 has no French: never picked
    points, clip, kind, chosen = tsne_points(audio, text, present, n_clips=20, seed=1)
    assert [i for i, _ in chosen] == [i for i in range(12) if i != 3]
    assert dict(chosen)[0] == 0
    assert points.shape == (11 * 4, 16) and list(kind[:4]) == [-1, 0, 1, 2]
    np.testing.assert_array_equal(points[0], audio[0])
    np.testing.assert_array_equal(points[3], text["deu"][0, 0])


# --- main() on the tiny corpus ------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(make_checkpoint) -> Path:
    """The default architecture, heads seeded; its training config names seed 7."""
    return make_checkpoint(0, {"seed": 7})


@pytest.fixture(scope="module")
def report_dir(tiny_corpus, checkpoint, feature_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    cache = feature_cache
    argv = ["--checkpoint", str(checkpoint), "--manifest", str(tiny_corpus / "test.jsonl"),
            "--out", str(out), "--cache-dir", str(cache)]
    assert evaluate.main(argv) == 0
    return out


def test_metrics_json_schema_and_ranges(report_dir, tiny_corpus, checkpoint):
    m = json.loads((report_dir / "metrics.json").read_text())
    manifest = tiny_corpus / "test.jsonl"
    assert list(m)[:5] == ["checkpoint", "manifest", "n_clips", "languages", "provenance"]
    assert m["checkpoint"] == str(checkpoint) and m["manifest"] == str(manifest)
    assert m["n_clips"] == 36
    assert m["languages"] == ["eng", "fra", "deu", "spa", "nld", "cat", "jpn", "zho"]
    prov = m["provenance"]
    assert prov["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert prov["seed"] == 7
    assert len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool)
    assert {"torch", "numpy", "atri", "scikit-learn"} <= set(prov["versions"])
    assert prov["versions"]["torch"] == torch.__version__.split("+")[0] or \
        prov["versions"]["torch"] == torch.__version__
    assert prov["checkpoint_identity"]["audio_backbone"] == "aisfx"
    for direction in ("t2a", "a2t"):
        assert set(m[direction]) == {*m["languages"], "avg"}
        for values in m[direction].values():
            assert set(values) == METRIC_KEYS
            for k in ("R@1", "R@5", "R@10", "mAP@10"):
                assert 0 <= values[k] <= 100
            assert values["R@1"] <= values["R@5"] <= values["R@10"]
            assert 1 <= values["medR"] <= 36 * (2 if direction == "a2t" else 1)
    assert set(m["gap"]) == set(m["dis"]) == {*m["languages"][1:], "avg"}
    for lang in m["gap"]:
        assert 0 <= m["gap"][lang] <= m["dis"][lang] + 1e-9 <= 2
    for d in ("t2a", "a2t"):
        assert 0 <= m["mrv_std"][d] ** 2 <= m["mrv_var"][d] + 1e-9  # Jensen
    assert m["duplicate_captions"] == dict.fromkeys(m["languages"], 0)


def test_metrics_equal_recomputation_from_embed_npz(
    report_dir, tiny_corpus, checkpoint, feature_cache, tmp_path
):
    """metrics.json equals the metrics of `atri embed`'s vectors, rebuilt into grids from
    the npz's (id, lang, caption index) rows. (test_embed checks cached = uncached rows.)"""
    out = tmp_path / "e.npz"
    manifest = tiny_corpus / "test.jsonl"
    assert embed.main(["--checkpoint", str(checkpoint), "--manifest", str(manifest),
                       "--out", str(out), "--cache-dir", str(feature_cache)]) == 0
    data = np.load(out, allow_pickle=False)
    ids = list(data["audio_ids"])
    row = {clip: i for i, clip in enumerate(ids)}
    n_slots = int(data["text_caption_index"].max()) + 1
    m = json.loads((report_dir / "metrics.json").read_text())
    dim = data["audio_vectors"].shape[1]
    text = {lang: np.zeros((len(ids), n_slots, dim), np.float32) for lang in m["languages"]}
    present = {lang: np.zeros((len(ids), n_slots), bool) for lang in m["languages"]}
    strings = {lang: [[""] * n_slots for _ in ids] for lang in m["languages"]}
    for clip, lang, j, vector, caption in zip(data["text_ids"], data["text_lang"],
                                              data["text_caption_index"], data["text_vectors"],
                                              data["text"], strict=True):
        text[str(lang)][row[str(clip)], j] = vector
        present[str(lang)][row[str(clip)], j] = True
        strings[str(lang)][row[str(clip)]][j] = str(caption)
    again = evaluate_embeddings(data["audio_vectors"], text, present, m["languages"], strings)
    keys = ("t2a", "a2t", "gap", "dis", "mrv_std", "mrv_var", "n_queries")
    expected = _flat({k: again[k] for k in keys})
    assert len(expected) == 9 * 6 * 2 + 8 * 2 + 4 + 8 * 3 + 2
    assert _flat({k: m[k] for k in keys}) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_report_md_and_tsne_png(report_dir):
    report = (report_dir / "report.md").read_text()
    m = json.loads((report_dir / "metrics.json").read_text())
    for lang in m["languages"]:
        assert f"| {lang} | {m['t2a'][lang]['R@1']:.2f} |" in report  # Table 1
        assert f"| {lang} | " in report.split("(ATRI Table 5)")[1]  # rank table
    for lang in m["languages"][1:]:
        assert f"| {lang} | {m['gap'][lang]:.3f} | {m['dis'][lang]:.3f} |" in report
    assert f"| A2T | {m['mrv_var']['a2t']:.2f} |" in report
    assert "case 1:" in report
    none = ", ".join(f"{x} 0" for x in m["languages"])  # the demo corpus repeats no caption
    assert f"all of them relevant): {none}." in report
    width, height = _png_size(report_dir / "tsne.png")
    assert 600 <= width <= 4000 and 600 <= height <= 4000
    assert (report_dir / "tsne.png").stat().st_size > 20_000  # 324 coloured markers
    assert not list(report_dir.glob(".*.tmp"))  # atomic writes leave no temp files


def _run_bad(argv_extra, tiny_corpus, checkpoint, tmp_path, capsys, manifest=None):
    out = tmp_path / "report"
    argv = ["--checkpoint", str(checkpoint), "--manifest",
            str(manifest or tiny_corpus / "test.jsonl"), "--out", str(out), *argv_extra]
    code = evaluate.main(argv)
    return code, capsys.readouterr().err, out


def test_caption_less_clip_exits_2_naming_it(tiny_corpus, tmp_path, capsys):
    records = [json.loads(line) for line in (tiny_corpus / "test.jsonl").read_text().splitlines()]
    for record in records:
        record["audio"] = str(tiny_corpus / record["audio"])
    records[1]["captions"] = {}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    # a plain folder as checkpoint: the input check must fail before any model is loaded
    code, err, out = _run_bad([], tiny_corpus, tmp_path, tmp_path, capsys, manifest=bad)
    assert code == 2
    assert "no captions" in err and records[1]["id"] in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--langs", "eng", "xyz"], "unknown language code(s) ['xyz']"),
        (["--cases", "no-such-clip"], "no clip 'no-such-clip'"),
        (["--manifest", "/nonexistent.jsonl"], "manifest not found"),
    ],
)
def test_bad_input_exits_2(tiny_corpus, tmp_path, capsys, extra, problem):
    code, err, out = _run_bad(extra, tiny_corpus, tmp_path, tmp_path, capsys)
    assert code == 2 and problem in err
    assert not out.exists()


def test_folder_that_is_no_checkpoint_exits_2(tiny_corpus, tmp_path, capsys):
    code, err, out = _run_bad([], tiny_corpus, tmp_path, tmp_path, capsys)
    assert code == 2 and "is not an atri checkpoint" in err
    assert not out.exists()
