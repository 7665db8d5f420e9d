"""What the commands read at the process's entry, for the libraries below them:
ATRI_THREADS applied once (a bad value refused by name), torchrun's variables."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from atri.commands.common import BadInput, apply_thread_settings, run_command
from atri.commands.train import TorchrunPlace, torchrun_place
from atri.training.encoders.threads import configure_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    configure_threads(before)


def test_atri_threads_sets_torch_and_later_openmp_runtimes(monkeypatch, restore_threads) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # restored afterwards
    monkeypatch.setenv("ATRI_THREADS", "1")
    assert apply_thread_settings() == 1
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"


def test_unset_atri_threads_changes_nothing(monkeypatch, restore_threads) -> None:
    monkeypatch.delenv("ATRI_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert apply_thread_settings() is None
    assert os.environ["OMP_NUM_THREADS"] == "7"


def test_a_bad_atri_threads_is_a_named_error_exit_2(monkeypatch, capsys) -> None:
    monkeypatch.setenv("ATRI_THREADS", "many")
    with pytest.raises(BadInput, match="ATRI_THREADS"):
        apply_thread_settings()
    parser = argparse.ArgumentParser(prog="atri x")
    ran = []
    assert run_command(parser, lambda args: ran.append(args) or 0, [], {}) == 2
    assert ran == [] and "atri x: error: bad setting ATRI_THREADS" in capsys.readouterr().err


def test_torchrun_place() -> None:
    assert torchrun_place({}) == TorchrunPlace(rank=0, world_size=1, local_rank=0)
    started = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert torchrun_place(started) == TorchrunPlace(rank=3, world_size=4, local_rank=1)
