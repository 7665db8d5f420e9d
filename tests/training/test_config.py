"""training/config.py without the command line: layering, and the errors it names; and
the trainer's small start-up functions that check a run before it trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from atri.training.config import CONFIG_FILE, ConfigError, TrainConfig, resolve_config
from atri.training.objectives.sampling import CaptionTable
from atri.training.trainer import check_resumable, draw_plans

BASE = {"strategy": "kcl", "train": "/t.jsonl", "val": "/v.jsonl"}


def test_layers_defaults_file_then_overrides(tmp_path: Path) -> None:
    file = tmp_path / "c.json"
    file.write_text(json.dumps({**BASE, "epochs": 3, "model": {"embed_dim": 64}}))
    overrides = {"epochs": 5, "model": {"tau_init": 0.1}}
    config = resolve_config(tmp_path / "run", False, file, overrides)
    assert (config.epochs, config.model.embed_dim, config.model.tau_init) == (5, 64, 0.1)
    assert config.batch_size == TrainConfig.batch_size  # the dataclass default, once


def test_a_stored_run_needs_resume_and_keeps_its_config(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(json.dumps(TrainConfig(**BASE).to_dict()))
    with pytest.raises(ConfigError, match="already holds a run"):
        resolve_config(tmp_path, False, None, {})
    assert resolve_config(tmp_path, True, None, {}) == TrainConfig(**BASE)
    with pytest.raises(ConfigError, match=r"cannot change \['epochs'\]"):
        resolve_config(tmp_path, True, None, {"epochs": 99})


@pytest.mark.parametrize(
    ("values", "message"),
    [({**BASE, "epoch": 2}, r"unknown training config field\(s\) \['epoch'\]"),
     ({"strategy": "kcl"}, "missing --train, --val"),
     ({**BASE, "strategy": "cacl", "langs": ["fra", "deu"]}, "cacl needs English"),
     ({**BASE, "epochs": "10"}, "epochs = '10' is not of type"),
     ({**BASE, "warmup": 1.5}, "warmup = 1.5 is out of range")],
)  # fmt: skip
def test_bad_configs_name_the_field(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


def test_an_epoch_smaller_than_a_batch_is_refused() -> None:
    table = CaptionTable(("eng", "fra"), np.full(5, 1), np.ones((5, 2), dtype=bool))
    config = TrainConfig(**BASE, langs=("eng", "fra"), batch_size=8)
    with pytest.raises(ConfigError, match="batch_size 8 exceeds the 5 items of an epoch"):
        draw_plans(config, table)
    assert len(draw_plans(TrainConfig(**BASE, batch_size=4, epochs=3), table)) == 3


def test_resume_refuses_state_of_another_step_or_config(tmp_path: Path) -> None:
    config = TrainConfig(**BASE)
    info = {"step": 7, "training_config": config.to_dict()}
    check_resumable(tmp_path, {"format": 1, "step": 7}, info, config)  # belongs together
    with pytest.raises(ConfigError, match="do not belong together"):
        check_resumable(tmp_path, {"format": 1, "step": 6}, info, config)
    with pytest.raises(ConfigError, match="another configuration"):
        check_resumable(tmp_path, {"format": 1, "step": 7}, info, TrainConfig(**BASE, seed=1))
