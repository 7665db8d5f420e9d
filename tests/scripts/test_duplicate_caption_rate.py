"""scripts/duplicate_caption_rate.py: pairs of batch items sharing a caption, counted on
drawn plans of a real manifest."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def rate(load_script):
    return load_script("duplicate_caption_rate")


def test_pairs_are_intersecting_caption_sets(rate):
    assert rate.batch_pairs([{"a", "b"}, {"b"}, {"c"}, {"a", "c"}]) == 3
    assert rate.batch_pairs([{"a"}, {"b"}, set()]) == 0


def test_group_pairs_count_pairs_within_each_group(rate):
    import numpy as np

    assert rate.group_pairs(np.array([0, 1, 0, -1, 0, 1, -1])) == 3 + 1  # -1: no group


def test_mask_same_counts_meta_groups_not_captions(rate, tiny_corpus, capsys):
    from atri.training.data.manifest import read_manifest, write_manifest

    records = read_manifest(tiny_corpus / "train.jsonl").records[:48]
    for i, record in enumerate(records):  # 6 concepts of 8 clips, captions all distinct
        record.meta = {**record.meta, "concept": f"c{i // 8}"}
    path = tiny_corpus / "train-48-concepts.jsonl"
    write_manifest(path, records)
    out = {}
    for name, extra in (("captions", []), ("concept", ["--mask-same", "concept"])):
        assert rate.main([str(path), "--batch-size", "16", "--epochs", "2", *extra]) == 0
        out[name] = json.loads(capsys.readouterr().out)
    assert out["captions"]["pairs_per_batch"] == 0
    assert out["concept"]["mask_same"] == "concept"
    assert out["concept"]["batches_with_a_pair"] == 6 and out["concept"]["pairs_per_batch"] > 3


def test_a_manifest_of_groups_has_pairs_and_one_without_has_none(rate, tiny_corpus, capsys):
    from atri.training.data.manifest import read_manifest, write_manifest

    records = read_manifest(tiny_corpus / "train.jsonl").records[:48]
    plain = tiny_corpus / "train-48.jsonl"
    write_manifest(plain, records)
    for i, record in enumerate(records):  # every clip takes its group leader's captions
        record.captions = dict(records[i - i % 8].captions)
    grouped = tiny_corpus / "train-48-groups.jsonl"
    write_manifest(grouped, records)
    out = {}
    for name, path in (("plain", plain), ("grouped", grouped)):
        assert rate.main([str(path), "--batch-size", "16", "--epochs", "2"]) == 0
        out[name] = json.loads(capsys.readouterr().out)
    assert out["plain"]["batches"] == out["grouped"]["batches"] == 6
    assert out["plain"]["pairs_per_batch"] == 0  # the demo's captions are all distinct
    # 6 groups of 8 over 3 batches of 16: several pairs in every batch
    assert out["grouped"]["batches_with_a_pair"] == 6 and out["grouped"]["pairs_per_batch"] > 3
