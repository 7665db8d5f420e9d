"""Fine-tuning the top N conv blocks of aisfx (`--audio-trainable-blocks N`, issue 11).

aisfx's CNN is four conv blocks (aisfx.py). With N trainable, the front-end and the
4 - N lower blocks stay frozen: their output for a clip never changes, so it is computed
once and kept in a bounded LRU cache keyed by the waveform's content (the e5 tower keeps
its lower layers' outputs per caption the same way, e5_torch.py), and a training step runs
only the top N blocks and the pooling:

    wave (N,) -> front-end -> blocks (nb, 1, 100, 96) -> lower blocks -> (nb, C, H, W)
      [cached] -> top N blocks -> (nb, 512, 12, 12) -> mean mels, max time -> mean blocks (512,)

Keyed by content, the cache is right for augmented views (another wave, another key) and
needs no clip ids from the data pipeline. Inference (`embed`, eval mode) runs the whole
CNN as before: the split is only a shortcut for training, equal to it up to float rounding.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from atri.training.encoders.aisfx import AisfxEncoder, to_blocks

# fp32 lower outputs, per 2.3 s block (a 10 s clip has 7): 38 KB (N = 4), 614 KB (N = 3),
# 307 KB (N = 2), 147 KB (N = 1)
LOWER_CACHE_BYTES = 2 << 30


def top_block_names(encoder: AisfxEncoder, top: int) -> list[str]:
    """Names of the top `top` conv blocks in `encoder.cnn` (`conv_block4`, ...)."""
    names = [name for name, _ in encoder.cnn.named_children()]
    if not 1 <= top <= len(names):
        raise ValueError(f"aisfx has {len(names)} conv blocks; cannot train the top {top}")
    return names[len(names) - top :]


class AisfxTop:
    """The training path of an aisfx encoder whose top `top` blocks learn. Holds no weights
    of its own (the encoder's blocks are used in place), so it adds nothing to a state dict."""

    def __init__(self, encoder: AisfxEncoder, top: int,
                 cache_bytes: int = LOWER_CACHE_BYTES) -> None:
        names = top_block_names(encoder, top)
        blocks = dict(encoder.cnn.named_children())
        self.encoder, self.top = encoder, top
        self.lower = [b for n, b in blocks.items() if n not in names]
        self.upper = [blocks[n] for n in names]
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[bytes, Tensor] = OrderedDict()
        self._bytes = 0

    @torch.no_grad()
    def lower_output(self, wave: Tensor) -> Tensor:
        """One clip (N,) -> the frozen part's output (nb, C, H, W), from the cache if seen."""
        key = _content_key(wave)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        enc = self.encoder
        x = to_blocks(enc.frontend(wave[None])[0], enc.cfg).unsqueeze(1)  # (nb, 1, 100, 96)
        for block in self.lower:
            x = block(x)  # (nb, C, H, W)
        self._remember(key, x)
        return x

    def _remember(self, key: bytes, x: Tensor) -> None:
        self._cache[key] = x
        self._bytes += x.numel() * x.element_size()
        while self._bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()

    def features(self, waves: Sequence[Tensor] | Tensor) -> Tensor:
        """(B, 512) clip embeddings with gradients into the top blocks (when grad is on)."""
        lowers = [self.lower_output(w) for w in waves]
        # one forward over every block of the batch: conv cost is per block either way
        counts = [len(x) for x in lowers]
        x = torch.cat(lowers)  # (sum nb, C, H, W)
        for block in self.upper:
            x = block(x)
        per_block = x.mean(dim=3).amax(dim=2)  # (sum nb, 512)
        return torch.stack([part.mean(dim=0) for part in per_block.split(counts)])  # (B, 512)


def _content_key(wave: Tensor) -> bytes:
    if wave.dim() != 1 or wave.numel() == 0:
        raise ValueError(f"each clip must be a non-empty 1-D tensor, got {tuple(wave.shape)}")
    data = wave.detach().to("cpu", torch.float32).contiguous().numpy()
    digest = hashlib.blake2b(data.tobytes(), digest_size=16)
    digest.update(str(data.shape).encode())
    return digest.digest()
