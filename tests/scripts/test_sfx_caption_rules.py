"""scripts/sfx_caption_rules.py: one checkpoint under two caption rules on real files: the
corpus whose clips share a caption has fewer queries and a higher chance, reports are
reused, and corpora of different clips are refused."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest


@pytest.fixture(scope="module")
def rules(load_script):
    return load_script("sfx_caption_rules")


def _corpora(tiny_corpus, tmp_path, n=12):
    from atri.training.data.manifest import read_manifest, write_manifest

    manifest = read_manifest(tiny_corpus / "val.jsonl")
    records = [replace(r, audio=str(manifest.audio_path(r))) for r in manifest.records[:n]]
    # per meaning: clips 0 and 1 carry the same captions, as two recordings of one sound would
    shared = [replace(records[1], captions=records[0].captions), *records[2:]]
    folders = {"clip": records, "meaning": [records[0], *shared]}
    for name, items in folders.items():
        for split in ("test", "test-xpkg", "test-zeroshot"):
            (tmp_path / name).mkdir(parents=True, exist_ok=True)
            write_manifest(tmp_path / name / f"{split}.jsonl", items)
    return tmp_path / "clip", tmp_path / "meaning"


def test_shared_captions_mean_fewer_queries_and_more_chance(rules, tiny_corpus, make_checkpoint,
                                                            shared_cache, tmp_path):
    per_clip, per_meaning = _corpora(tiny_corpus, tmp_path)
    out, work = tmp_path / "rules.json", tmp_path / "work"
    argv = ["--per-clip", str(per_clip), "--per-meaning", str(per_meaning), "--checkpoint",
            f"m={make_checkpoint(5)}", "--work", str(work), "--out", str(out)]
    assert rules.main(argv) == 0
    result = json.loads(out.read_text())
    for split in ("test", "test-xpkg", "test-zeroshot"):
        clip, meaning = (result["checkpoints"]["m"][f"{r}/{split}"] for r in ("per-clip",
                                                                              "per-meaning"))
        # the two captions of clip 0 now stand for two clips: two fewer distinct strings
        assert meaning["queries_per_language"] == clip["queries_per_language"] - 2
        assert meaning["multi_relevant_per_language"] == clip["multi_relevant_per_language"] + 2
        chance = [result["chance"][f"{r}/{split}"]["t2a_r1"] for r in ("per-clip", "per-meaning")]
        assert chance[1] > chance[0]
    report = work / "m-per-meaning-test" / "metrics.json"
    stamp = report.stat().st_mtime_ns
    assert rules.main(argv) == 0  # the reports are read again, not recomputed
    assert report.stat().st_mtime_ns == stamp


def test_corpora_of_different_clips_are_refused(rules, tiny_corpus, tmp_path):
    per_clip, _ = _corpora(tiny_corpus, tmp_path / "a")
    _, other = _corpora(tiny_corpus, tmp_path / "b", n=10)
    with pytest.raises(SystemExit, match="test: the two corpora do not hold the same clips"):
        rules.main(["--per-clip", str(per_clip), "--per-meaning", str(other), "--checkpoint",
                    "m=default", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")])
