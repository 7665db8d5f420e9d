"""`atri train --augment-views N` on a slice of the tiny demo corpus with the real frozen
aisfx + e5-small features: 0 views trains exactly as before views existed, and 2 views
train on cached augmented features that a second run reads back without recomputing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atri.commands.train import main
from atri.training.data.feature_views import view_key
from atri.training.data.features import AudioFeatureStore, backbone_identity, clip_key
from atri.training.data.manifest import read_manifest, write_manifest
from atri.training.encoders.model import ModelConfig, RetrievalModel, build_model

LANGS = ("eng", "fra", "deu", "jpn")
N_TRAIN, N_VAL = 32, 16
# The epoch losses of the run below, measured at commit 7c79d62 (before augmentation
# existed) on the tiny corpus. Tolerance: aisfx's batched convolutions may round the
# last bits differently on another CPU.
LOSSES_BEFORE_VIEWS = [2.153594136238098, 2.0855687856674194]


@pytest.fixture(scope="module")
def corpus(tiny_corpus: Path, feature_cache: Path) -> dict[str, Path]:
    root = tiny_corpus
    write_manifest(root / "train-aug.jsonl", read_manifest(root / "train.jsonl").records[:N_TRAIN])
    write_manifest(root / "val-aug.jsonl", read_manifest(root / "val.jsonl").records[:N_VAL])
    return {"train": root / "train-aug.jsonl", "val": root / "val-aug.jsonl",
            "cache": feature_cache}


def run_args(corpus: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "--train", str(corpus["train"]), "--val", str(corpus["val"]), "--strategy", "mlclap",
        "--out", str(out), "--cache-dir", str(corpus["cache"]), "--langs", ",".join(LANGS),
        "--epochs", "2", "--batch-size", "8", "--lr", "2e-3", "--seed", "3", *extra,
    ]


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_no_views_trains_as_before(corpus, tmp_path: Path) -> None:
    assert main(run_args(corpus, tmp_path / "default")) == 0
    assert losses(tmp_path / "default") == pytest.approx(LOSSES_BEFORE_VIEWS, rel=1e-5)
    assert main(run_args(corpus, tmp_path / "zero", "--augment-views", "0")) == 0
    assert losses(tmp_path / "zero") == losses(tmp_path / "default")


def test_two_views_are_cached_then_read(corpus, tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    inner = RetrievalModel.audio_features

    def counted(self, waves):
        calls.append(len(waves))
        return inner(self, waves)

    monkeypatch.setattr(RetrievalModel, "audio_features", counted)
    first = tmp_path / "first"
    assert main(run_args(corpus, first, "--augment-views", "2")) == 0
    config = json.loads((first / "config.json").read_text())
    assert config["augment_views"] == 2
    model = build_model(ModelConfig())
    rows = AudioFeatureStore(corpus["cache"], backbone_identity(model), model.audio_dim).read()
    manifest = read_manifest(corpus["train"])
    for record in manifest:
        key = clip_key(manifest.audio_path(record))
        assert all(view_key(key, v) in rows for v in range(3)), record.id
    assert losses(first) != pytest.approx(LOSSES_BEFORE_VIEWS, rel=1e-5)  # views were used

    computed = sum(calls)
    assert computed >= 2 * N_TRAIN  # at least the augmented views were new
    second = tmp_path / "second"
    assert main(run_args(corpus, second, "--augment-views", "2")) == 0
    assert sum(calls) == computed  # all read back: the backbone never ran
    assert losses(second) == losses(first)  # the same views drawn: the same run
