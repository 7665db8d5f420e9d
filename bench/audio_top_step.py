"""The audio side of one training step with aisfx's top blocks trainable (issue 11):
forward and backward of a batch of clips through `RetrievalModel.audio_features` and the
audio head, for `--audio-trainable-blocks N` (first step: lower blocks computed and cached;
later steps: read from the cache) against `--audio-trainable` (the whole CNN every step).

    .venv/bin/python bench/audio_top_step.py [--batch 24] [--seconds 3] [--repeats 3]

Synthetic noise clips (the CNN's cost does not depend on the content), torch threads from
ATRI_THREADS (default 1). Prints one line per setting: median seconds per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from atri.training.encoders.model import ModelConfig, build_model
from atri.training.encoders.text_encoder import build_text_encoder


def step_seconds(config: ModelConfig, clips: list[torch.Tensor], repeats: int,
                 text) -> tuple[float, float]:
    """(first step, median of the next `repeats`) in seconds."""
    model = build_model(config, text_encoder=text).train()
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        model.embed_audio(clips).sum().backward()
        times.append(time.perf_counter() - started)
        model.zero_grad(set_to_none=True)
    return times[0], statistics.median(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("ATRI_THREADS", "1")))
    torch.manual_seed(0)
    rate = 44100
    clips = [0.1 * torch.randn(int(args.seconds * rate)) for _ in range(args.batch)]
    text = build_text_encoder("e5-small")
    settings = [(f"--audio-trainable-blocks {n}", ModelConfig(audio_trainable_blocks=n))
                for n in (1, 2, 3, 4)]
    settings.append(("--audio-trainable", ModelConfig(audio_trainable=True)))
    print(f"batch {args.batch} x {args.seconds:g} s, {torch.get_num_threads()} thread(s)")
    for name, config in settings:
        first, later = step_seconds(config, clips, args.repeats, text)
        print(f"{name:28s} first step {first:6.2f} s, later steps {later:6.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
