"""How far can frozen aisfx features carry real-recording retrieval? For every recording
(mixtures left out) of a real-recordings corpus's `test` and `test-xpkg` splits: is its
nearest `train` recording of the same concept (1-NN concept accuracy), and is one of its 5
nearest? Asked of several poolings of aisfx's activations and of a checkpoint's trained
audio space, so that a low figure can be blamed on the backbone, not the heads.

    python scripts/sfx_audio_ceiling.py data/corpus-sfx-v4 --checkpoint default \
        --out docs/results/sfx-audio-ceiling.json
    python scripts/sfx_audio_ceiling.py data/corpus-sfx-v5 --towers data/ckpt-a8e0517 \
        data/run-top2-joint-10ep/best --out towers.json

`--towers`: instead of aisfx's poolings, each checkpoint's whole audio path (trained top
blocks and head: the space the index searches), so that a trained tower can be asked the
same question as the frozen features.

Poolings (per 2.3 s block, then over the clip's blocks): `mean` (the project's clip
embedding: the package's max over time, mean over blocks), `max` (max over blocks),
`avgt` (mean over time instead of max), `b3` (the third conv block, 256 channels),
`std` (the spread over blocks), concatenations of standardised poolings, and `heads`
(the checkpoint's audio head applied to `mean`). Features are centred on train's mean
and compared by cosine. About 5 minutes on 2 cores (aisfx runs on every recording).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from atri.training.data.audio_io import load_audio
from atri.training.data.features import default_cache_dir
from atri.training.data.manifest import read_manifest
from atri.training.encoders.aisfx import load_aisfx_encoder, to_blocks
from atri.training.encoders.checkpoint import load_checkpoint
from atri.training.evaluation.embed import embed_manifest
from atri.training.fileio import atomic_write_text

SPLITS = ("train", "test", "test-xpkg")
COMBOS = {"mean+max": ("mean", "max"), "mean+b3": ("mean", "b3"),
          "mean+avgt": ("mean", "avgt"), "mean+max+b3+avgt": ("mean", "max", "b3", "avgt")}


def poolings(encoder, wave: np.ndarray) -> dict[str, torch.Tensor]:
    blocks = to_blocks(encoder.frontend(torch.from_numpy(wave)[None])[0], encoder.cfg)
    x, outs = blocks.unsqueeze(1), []
    for block in encoder.cnn.children():
        x = block(x)
        outs.append(x)
    b3, b4 = outs[2].mean(3), outs[3].mean(3)  # (nb, C, T): mean over mels
    emb = b4.amax(2)  # (nb, 512): the package's block embedding
    return {"mean": emb.mean(0), "max": emb.amax(0), "avgt": b4.mean(2).mean(0),
            "b3": b3.amax(2).mean(0),
            "std": emb.std(0) if len(emb) > 1 else torch.zeros(emb.shape[1])}


def is_recording(record) -> bool:
    return not record.id.startswith(("mix-", "mel-"))


def recordings(corpus: Path, split: str) -> list:
    return [r for r in read_manifest(corpus / f"{split}.jsonl").records if is_recording(r)]


def tower_features(corpus: Path, checkpoints: list[str]) -> tuple[dict, dict]:
    """{split: {checkpoint: (n, d) audio embeddings of the split's recordings}}, labels."""
    feats: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    manifests = {s: read_manifest(corpus / f"{s}.jsonl") for s in SPLITS}
    keep = {s: [i for i, r in enumerate(m.records) if is_recording(r)]
            for s, m in manifests.items()}
    labels = {s: np.array([manifests[s].records[i].meta.get("concept") for i in keep[s]])
              for s in SPLITS}
    for checkpoint in checkpoints:
        model, _ = load_checkpoint(checkpoint)
        for split, manifest in manifests.items():
            emb = embed_manifest(model, manifest, ["eng"], text=False,
                                 cache_dir=default_cache_dir(os.environ))
            feats[split][checkpoint] = np.asarray(emb.audio)[keep[split]]
        print(f"{checkpoint}: embedded", file=sys.stderr)
    return feats, labels


def accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray,
             y_test: np.ndarray) -> tuple[float, float]:
    """(1-NN, any-of-5) concept accuracy in percent, cosine after centring on train."""
    mu = train.mean(0)
    a = (train - mu) / (np.linalg.norm(train - mu, axis=1, keepdims=True) + 1e-9)
    b = (test - mu) / (np.linalg.norm(test - mu, axis=1, keepdims=True) + 1e-9)
    sims = b @ a.T
    top5 = np.argsort(-sims, axis=1)[:, :5]
    one = float(np.mean(y_train[top5[:, 0]] == y_test))
    five = float(np.mean([y_test[i] in set(y_train[top5[i]]) for i in range(len(y_test))]))
    return round(100 * one, 1), round(100 * five, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--towers", nargs="+", metavar="CHECKPOINT",
                        help="measure these checkpoints' audio paths instead of aisfx's poolings")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.towers:
        feats, labels = tower_features(args.corpus, args.towers)
        return report(feats, labels, lambda split, name: feats[split][name], args)
    encoder = load_aisfx_encoder().eval()
    model, _ = load_checkpoint(args.checkpoint)
    feats: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for split in SPLITS:
            records = recordings(args.corpus, split)
            rows = [poolings(encoder, load_audio(args.corpus / r.audio, 44100)) for r in records]
            feats[split] = {k: torch.stack([row[k] for row in rows]).numpy() for k in rows[0]}
            mean = torch.from_numpy(feats[split]["mean"])
            feats[split]["heads"] = model.project_audio(mean).float().numpy()
            labels[split] = np.array([r.meta.get("concept") for r in records])
            print(f"{split}: {len(records)} recordings", file=sys.stderr)
    stats = {k: (feats["train"][k].mean(0), feats["train"][k].std(0) + 1e-6)
             for k in feats["train"]}

    def view(split: str, name: str) -> np.ndarray:
        parts = COMBOS.get(name)
        if parts is None:
            return feats[split][name]
        return np.concatenate([(feats[split][p] - stats[p][0]) / stats[p][1] for p in parts], 1)

    return report(feats, labels, view, args, extra=tuple(COMBOS))


def report(feats: dict, labels: dict, view, args, extra: tuple[str, ...] = ()) -> int:
    """Print the accuracy table of every feature view, and write it as JSON to --out."""
    result = {"corpus": str(args.corpus), "checkpoint": args.towers or args.checkpoint,
              "recordings": {s: int(len(labels[s])) for s in SPLITS}, "accuracy": {}}
    print("| features | test 1-NN | test any-of-5 | test-xpkg 1-NN | test-xpkg any-of-5 |")
    print("|---|---:|---:|---:|---:|")
    for name in (*feats["train"], *extra):
        cells = {s: accuracy(view("train", name), labels["train"], view(s, name), labels[s])
                 for s in ("test", "test-xpkg")}
        result["accuracy"][name] = cells
        print(f"| {name} | {cells['test'][0]} | {cells['test'][1]} | "
              f"{cells['test-xpkg'][0]} | {cells['test-xpkg'][1]} |")
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
