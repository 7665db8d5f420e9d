"""`atri train` options that act on pairs and groups of clips (duplicate captions,
`--mask-same`, `--multi-positive`, `--prototype-weight`) on the tiny demo corpus of
test_train.py, with the real frozen features."""

from __future__ import annotations

from pathlib import Path

import torch

from atri.commands.train import main
from atri.training.data.manifest import ClipRecord, read_manifest, write_manifest
from atri.training.encoders.checkpoint import load_checkpoint
from tests.training import test_train
from tests.training.test_train import LANGS, read_log, train_args

corpus = test_train.corpus  # its session fixture: the tiny corpus cut to 48 train clips


def test_duplicate_captions_leave_the_negatives(corpus, tmp_path: Path) -> None:
    """Clips in groups of four with the same captions (as real recordings of one concept
    often are): masked, each group's captions leave its other clips' denominators, so the
    same seeded run has a lower loss; the choice is recorded in the checkpoint."""
    records = read_manifest(corpus["train"]).records
    for i, record in enumerate(records):
        record.captions = dict(records[i - i % 4].captions)
    grouped = {**corpus, "train": corpus["train"].with_name("train-groups.jsonl")}
    write_manifest(grouped["train"], records)  # beside the audio its paths are relative to
    losses = {}
    for name, extra in (("plain", ()), ("masked", ("--mask-duplicate-captions",))):
        run = tmp_path / name
        assert main(train_args(grouped, run, "kcl-balanced", "--epochs", "1", *extra)) == 0
        losses[name] = read_log(run)[0]["loss"]
        _, info = load_checkpoint(run / "best")
        assert info["training_config"]["mask_duplicate_captions"] is (name == "masked")
    assert losses["masked"] < losses["plain"], losses  # fewer negatives in every batch


def test_clips_of_one_group_leave_each_others_negatives(corpus, tmp_path: Path) -> None:
    """`--mask-same concept`: clips in groups of four under meta "concept", captions left
    as they are (all different): masked, a group's clips leave each other's denominators,
    so the same seeded run has a lower loss; clips without the key are not grouped."""
    records = read_manifest(corpus["train"]).records
    for i, record in enumerate(records):
        record.meta = {**record.meta, "concept": f"c{i // 4}"} if i % 8 < 4 else record.meta
    grouped = {**corpus, "train": corpus["train"].with_name("train-concepts.jsonl")}
    write_manifest(grouped["train"], records)
    losses = {}
    arms = (("plain", ()), ("masked", ("--mask-same", "concept")),
            ("positive", ("--mask-same", "concept", "--multi-positive")))
    for name, extra in arms:
        run = tmp_path / name
        assert main(train_args(grouped, run, "kcl-balanced", "--epochs", "1", *extra)) == 0
        losses[name] = read_log(run)[0]["loss"]
        _, info = load_checkpoint(run / "best")
        assert info["training_config"]["mask_same"] == (extra[1] if extra else None)
        assert info["training_config"]["multi_positive"] is (name == "positive")
    assert losses["masked"] < losses["plain"], losses
    # as positives, a group's captions stay in the denominators and add harder positives
    assert losses["positive"] > losses["masked"], losses


def test_prototypes_pull_captions_toward_their_group(corpus, tmp_path: Path) -> None:
    """Same seed, with and without `--prototype-weight 5 --prototype-key instrument`: the
    prototype loss of the training captions (each clip's first caption in every language,
    against its instrument's mean audio embedding), measured on each run's last
    checkpoint, is lower with it; the choice is in the checkpoint."""
    from atri.training.batches import clip_groups
    from atri.training.evaluation.embed import embed_manifest
    from atri.training.objectives.prototypes import group_prototypes, prototype_loss

    manifest = read_manifest(corpus["train"])
    groups = torch.from_numpy(clip_groups(manifest.records, "instrument"))
    assert (groups >= 0).all() and int(groups.max()) >= 3
    measured = {}
    for name, extra in (("plain", ()), ("proto", ("--prototype-weight", "5",
                                                   "--prototype-key", "instrument"))):
        run = tmp_path / name
        assert main(train_args(corpus, run, "kcl-balanced", *extra)) == 0
        model, info = load_checkpoint(run / "last")  # both after the same two epochs
        assert info["training_config"]["prototype_weight"] == (5.0 if extra else 0.0)
        emb = embed_manifest(model, manifest, list(LANGS), cache_dir=corpus["cache"])
        protos = group_prototypes(torch.as_tensor(emb.audio).double(), groups,
                                  int(groups.max()) + 1)
        text = torch.cat([torch.as_tensor(emb.text[lang][:, 0]).double() for lang in LANGS])
        present = torch.cat([torch.as_tensor(emb.present[lang][:, 0]) for lang in LANGS])
        targets = groups.repeat(len(LANGS)).masked_fill(~present, -1)
        measured[name] = prototype_loss(text, targets, protos, model.tau().double()).item()
    assert measured["proto"] < measured["plain"], measured


def test_clip_groups_number_equal_values_and_leave_the_rest_out() -> None:
    from atri.training.batches import clip_groups

    metas = [{"concept": "dog", "attrs": "far"}, {}, {"concept": "rain"},
             {"concept": "dog"}, {"concept": ""}, {"attrs": "far"}, {"concept": "dog"}]
    records = [ClipRecord(f"c{i}", f"{i}.wav", {"eng": ["x"]}, m) for i, m in enumerate(metas)]
    assert clip_groups(records, "concept").tolist() == [0, -1, 1, 0, -1, -1, 0]
    assert clip_groups(records, "concept+attrs").tolist() == [0, -1, 1, 2, -1, -1, 2]


def test_caption_ids_are_equal_exactly_for_equal_strings() -> None:
    from atri.training.batches import Captions

    texts = ["a dog barks", "verre brisé", "a dog barks", "A dog barks", "verre brisé", "雷声"]
    captions = Captions(("eng",), rows=None, texts=texts, row_lang=None, vectors=None)
    ids = captions.text_ids
    assert ids.shape == (6,) and ids.dtype.kind == "i"
    for i, a in enumerate(texts):
        for j, b in enumerate(texts):
            assert (ids[i] == ids[j]) == (a == b)
