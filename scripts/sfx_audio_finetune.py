"""Experiment (issue 11): does fine-tuning aisfx's top conv block help real recordings?

Starts from CHECKPOINT (heads and all; default: the shipped one), freezes aisfx's first three conv
blocks (their outputs are computed once per clip and kept in memory, fp16, and in
/tmp/ft/b3-<split>.pt), and trains the fourth block (BatchNorm statistics frozen) and both
heads with kcl-balanced on the real corpus's `train` split (recordings and mixtures), one
caption per language per clip per step, batch 24, AdamW (block at LR_BLOCK, heads at
1e-4, weight decay 1e-4). Each epoch is scored on `val` (T2A R@10, 8-language average);
the best epoch is reported on `test`, `test-xpkg` and `test-zeroshot` (T2A R@1, R@10).
Epoch 0 is the default checkpoint itself, frozen: the baseline of the same run.

    python scripts/sfx_audio_finetune.py THREADS EPOCHS LR_BLOCK [CHECKPOINT]
    python scripts/sfx_audio_finetune.py 1 8 3e-5 data/ckpt-ad8ad20  # docs/results/sfx-ablation.md
    python scripts/sfx_audio_finetune.py 1 6 3e-4 data/ckpt-ad8ad20

The recorded runs started from the default of commit ad8ad20 (frozen aisfx): `git show
ad8ad20:training/checkpoints/default/model.safetensors > data/ckpt-ad8ad20/model.safetensors`,
and `checkpoint.json` the same way. Today's default already trained that block.

Reads data/corpus-sfx-v4 and the text feature cache (captions encoded by e5-small, as
`atri train` caches them). About 15 minutes per run on 2 shared cores. A scratch
experiment: the trained block is not saved. The training mode that came of it is
`atri train --audio-trainable-blocks N` (docs/training.md).
"""

from __future__ import annotations

import copy
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from atri.training.data.audio_io import load_audio
from atri.training.data.features import default_cache_dir, text_features
from atri.training.data.manifest import read_manifest
from atri.training.encoders.aisfx import to_blocks
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.embed import manifest_captions
from atri.training.evaluation.metrics import evaluate_embeddings
from atri.training.languages import LANGS
from atri.training.objectives.losses import kcl_balanced_loss

ROOT = Path("data/corpus-sfx-v4")
SPLITS = ("train", "val", "test", "test-xpkg", "test-zeroshot")
BATCH = 24


def lower_outputs(split: str, encoder, lower) -> tuple:
    """(manifest, per clip its (n_blocks, 256, 12, 12) fp16 third-block output)."""
    cache = Path(f"/tmp/ft/b3-{split}.pt")
    manifest = read_manifest(ROOT / f"{split}.jsonl")
    if cache.exists():
        return manifest, torch.load(cache, weights_only=True)  # a list of tensors
    out = []
    with torch.inference_mode():
        for record in manifest.records:
            wave = load_audio(ROOT / record.audio, 44100)
            x = to_blocks(encoder.frontend(torch.from_numpy(wave)[None])[0], encoder.cfg)
            x = x.unsqueeze(1)
            for block in lower:
                x = block(x)
            out.append(x.half().clone())
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return manifest, out


def main() -> int:
    threads, epochs = int(sys.argv[1]), int(sys.argv[2])
    lr_block = float(sys.argv[3])
    torch.set_num_threads(threads)
    model, _ = load_checkpoint(sys.argv[4] if len(sys.argv) > 4 else "default")
    model.eval()
    encoder = model.audio_backbone
    blocks = list(encoder.cnn.children())
    lower, top = blocks[:3], blocks[3]
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)

    def pool(x: torch.Tensor) -> torch.Tensor:  # (nb, 256, 12, 12) -> (512,), as aisfx
        return top(x).mean(3).amax(2).mean(0)

    def audio_emb(outputs: list) -> torch.Tensor:
        feats = torch.stack([pool(x.float()) for x in outputs])
        return F.normalize(model.project_audio(feats).float(), dim=-1)

    data = {s: lower_outputs(s, encoder, lower) for s in SPLITS}
    texts = {s: text_features(model.text_encoder, data[s][0], LANGS, default_cache_dir(os.environ))
             for s in data}

    def evaluate(split: str) -> tuple[float, float]:
        manifest, outputs = data[split]
        model.eval()
        top.eval()
        with torch.no_grad():
            audio = torch.cat([audio_emb(outputs[i:i + 64])
                               for i in range(0, len(outputs), 64)]).numpy()
            feats = texts[split]
            vectors = F.normalize(model.project_text(feats.vectors).float(), dim=-1).numpy()
        captions, present = manifest_captions(manifest, LANGS)
        text = {}
        for k, lang in enumerate(LANGS):
            rows = feats.rows[:, k, :]  # (N, C)
            arr = np.zeros((rows.shape[0], rows.shape[1], vectors.shape[1]), np.float32)
            arr[rows >= 0] = vectors[rows[rows >= 0]]
            text[lang] = arr
        metrics = evaluate_embeddings(audio, text, present, LANGS, captions)
        return metrics["t2a"]["avg"]["R@1"], metrics["t2a"]["avg"]["R@10"]

    for p in model.parameters():
        p.requires_grad_(False)
    params_top = list(top.parameters())
    heads = [*model.audio_head.parameters(), *model.text_head.parameters()]
    for p in params_top + heads:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": params_top, "lr": lr_block, "weight_decay": 1e-4},
                             {"params": heads, "lr": 1e-4, "weight_decay": 1e-4}])
    print("epoch 0 (frozen, default heads): val", evaluate("val"), "test", evaluate("test"),
          flush=True)
    _, outputs = data["train"]
    feats = texts["train"]
    n = len(outputs)
    best: tuple = (-1, None, 0)
    for epoch in range(1, epochs + 1):
        started, order, losses = time.time(), np.random.permutation(n), []
        model.train()
        top.train()
        for module in top.modules():  # BatchNorm keeps aisfx's statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        for s in range(0, n - BATCH + 1, BATCH):
            idx = order[s:s + BATCH]
            a = audio_emb([outputs[i] for i in idx])
            rows = feats.rows[idx]  # (B, K, C)
            pick = np.full(rows.shape[:2], -1)
            for i in range(rows.shape[0]):
                for k in range(rows.shape[1]):
                    candidates = rows[i, k][rows[i, k] >= 0]
                    if len(candidates):
                        pick[i, k] = np.random.choice(candidates)
            present = torch.from_numpy(pick >= 0)
            tv = feats.vectors[torch.from_numpy(np.where(pick >= 0, pick, 0))]  # (B, K, 384)
            te = F.normalize(model.project_text(tv).float(), dim=-1)
            loss = kcl_balanced_loss(a, te, model.tau().float(), present)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        score = evaluate("val")
        print(f"epoch {epoch} loss {np.mean(losses):.3f} val {score} "
              f"{time.time() - started:.0f}s", flush=True)
        if score[1] > best[0]:
            state = (top.state_dict(), model.audio_head.state_dict(), model.text_head.state_dict())
            best = (score[1], copy.deepcopy(state), epoch)
    top.load_state_dict(best[1][0])
    model.audio_head.load_state_dict(best[1][1])
    model.text_head.load_state_dict(best[1][2])
    print("best epoch", best[2], {s: evaluate(s) for s in SPLITS[2:]}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
