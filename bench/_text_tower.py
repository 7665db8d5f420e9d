"""Helpers of bench/train_cost.py: the trainable text tower of its `text` setting, a
randomly initialised BERT saved like a hub model, with a WordPiece vocabulary of the
demo corpus's caption words."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Tower:
    """The randomly initialised BERT of the `text` setting."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int  # padded with unused tokens to this size (embedding + its AdamW state)


def make_tower(folder: Path, tower: Tower, captions: list[dict[str, list[str]]]) -> Path:
    """A random BERT saved like a hub model, with a WordPiece vocab of the captions' words
    (BERT's own normalisation and pre-tokenisation) and single characters, padded to
    `tower.vocab` entries."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertConfig, BertModel, BertTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    normalise, split = BertNormalizer(lowercase=True), BertPreTokenizer()
    texts = [t for clip in captions for lang_texts in clip.values() for t in lang_texts]
    words = {w for t in texts for w, _ in split.pre_tokenize_str(normalise.normalize_str(t))}
    chars = sorted({c for w in words for c in w})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = list(dict.fromkeys([*specials, *sorted(words), *chars, *(f"##{c}" for c in chars)]))
    vocab += [f"[unused{i}]" for i in range(max(0, tower.vocab - len(vocab)))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=tower.hidden,
                        num_hidden_layers=tower.layers, num_attention_heads=tower.heads,
                        intermediate_size=tower.intermediate, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def tokens_per_caption(folder: Path, captions: list[dict[str, list[str]]]) -> dict[str, float]:
    """Mean tokens per caption ([CLS] and [SEP] included), per language."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    out = {}
    for lang in captions[0]:
        ids = tokenizer([t for clip in captions for t in clip[lang]])["input_ids"]
        out[lang] = round(statistics.mean(map(len, ids)), 1)
    return out
