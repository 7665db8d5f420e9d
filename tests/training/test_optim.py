"""The optimiser and the run's stop signal: lr schedule, weight-decay groups, SIGTERM."""

from __future__ import annotations

import os

import pytest
import torch

from atri.training.encoders.model import ModelConfig, build_model
from atri.training.optim import lr_factor, param_groups


def test_lr_schedule() -> None:
    total = 100
    lrs = [lr_factor(s, total, 0.1) for s in range(total)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] < 0.01
    assert lr_factor(0, 10, 0.0) == 1.0


def test_constant_schedule_warms_up_over_one_epoch_whatever_the_budget() -> None:
    for total in (100, 10_000):  # the budget does not move it
        lrs = [lr_factor(s, total, 0.05, "constant", epoch_steps=20) for s in range(total)]
        assert lrs[:20] == pytest.approx([(s + 1) / 20 for s in range(20)])
        assert set(lrs[19:]) == {1.0}


def test_sigterm_requests_a_clean_stop() -> None:
    import signal
    import time

    from atri.training.distributed import Dist
    from atri.training.stopper import Stopper

    one = Dist(rank=0, world=1, device=torch.device("cpu"))
    with Stopper(None, time.monotonic()) as stopper:
        assert not stopper.should_stop(one)
        os.kill(os.getpid(), signal.SIGTERM)  # handled: the process goes on
        assert stopper.should_stop(one) and stopper.reason == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    assert Stopper(1.0, time.monotonic() - 61).should_stop(one)  # budget spent


def test_no_weight_decay_on_temperature_and_biases() -> None:
    from atri.training.config import TrainConfig

    model = build_model(ModelConfig())
    config = TrainConfig(strategy="kcl", train="t", val="v")
    groups = param_groups(model, config)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.temperature) not in decayed
    assert id(model.audio_head[0].bias) not in decayed
    assert id(model.audio_head[0].weight) in decayed
    assert sum(len(g["params"]) for g in groups) == 9  # 2 heads x 2 linears x 2, and tau
