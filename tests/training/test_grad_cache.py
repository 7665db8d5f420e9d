"""GradCache (grad_cache.py): the trainer's step through it has the plain step's loss and
gradients, for every strategy, on a tiny random BERT and on e5-small-torch's top layer,
and keeps no tower activations from its forward."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from atri.training.batches import LocalBatch
from atri.training.corpus.plan import plan_train
from atri.training.encoders.model import ModelConfig, RetrievalModel, build_model
from atri.training.objectives.grad_cache import cached_embeddings, text_chunks
from atri.training.objectives.strategies import NAMES as STRATEGIES
from atri.training.objectives.strategies import get_strategy
from atri.training.step_loss import StepLoss
from tests.training.test_train import make_tiny_bert

LANGS = ("eng", "fra", "jpn")
B = 6


def text_batch(strategy: str) -> LocalBatch:
    """B clips with real captions; KCL's slots all K languages (two absent), the others
    one or two, as sampling.py lays them out."""
    plans = plan_train(B, random.Random("0:train"), "tr")
    slots = get_strategy(strategy).slots(len(LANGS))
    present = torch.ones(B, slots, dtype=torch.bool)
    if slots == 3:
        present[1, 0] = present[4, 2] = False
    langs = LANGS if slots != 1 else ("fra",)
    groups, rows = [], []
    for k, lang in enumerate(langs[:slots]):
        clips = [i for i in range(B) if present[i, k]]
        groups.append((lang, [plans[i].captions[lang][0] for i in clips]))
        rows += [(i, k) for i in clips]
    torch.manual_seed(1)
    return LocalBatch(
        audio=torch.randn(B, 192), text=groups, slots=torch.tensor(rows), present_local=present,
        present=present, clip_ids=torch.tensor([0, 1, 2, 0, 3, 4]), local_clips=list(range(B)),
    )


def step(model: RetrievalModel, strategy: str, chunk: int) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    loss = StepLoss(model, get_strategy(strategy), world=1, grad_cache=chunk)(
        text_batch(strategy))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}  # BERT's pooler gets none


def assert_same_step(model: RetrievalModel, strategy: str, chunk: int) -> None:
    loss, grads = step(model, strategy, 0)
    cached_loss, cached_grads = step(model, strategy, chunk)
    assert cached_loss == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == cached_grads.keys()
    assert any(k.startswith("text_tower.") for k in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-4, atol=1e-6,
                                   msg=f"{strategy} {name}")


@pytest.fixture(scope="module")
def bert_model(tmp_path_factory) -> RetrievalModel:
    pytest.importorskip("transformers")
    bert = make_tiny_bert(tmp_path_factory.mktemp("gc") / "bert")
    torch.manual_seed(0)
    model = build_model(ModelConfig(audio="ced-tiny", text=f"hf:{bert}", text_trainable=True,
                                    embed_dim=32), pretrained=False)
    for module in model.modules():  # a plain step draws other dropout masks than GradCache
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.text_encoder.module.config.attention_probs_dropout_prob = 0.0
    return model.train()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_grad_cache_equals_plain_step_tiny_bert(bert_model, strategy: str) -> None:
    assert_same_step(bert_model, strategy, chunk=2)  # several chunks per language


def test_grad_cache_equals_plain_step_e5_top_layer() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(audio="ced-tiny", text="e5-small-torch",
                                    text_trainable_layers=1, embed_dim=32), pretrained=False)
    model.train()
    assert_same_step(model, "kcl", chunk=4)


def test_forward_keeps_no_tower_activations(bert_model) -> None:
    """What autograd saves during the forward: the plain step keeps the tower's activations
    of every caption, GradCache none of them (it re-embeds chunk by chunk in backward)."""
    def saved_bytes(chunk: int) -> int:
        seen: dict[int, int] = {}
        params = {p.untyped_storage().data_ptr() for p in bert_model.parameters()}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            StepLoss(bert_model, get_strategy("kcl"), world=1, grad_cache=chunk)(
                text_batch("kcl"))
        return sum(seen.values())

    plain, cached = saved_bytes(0), saved_bytes(2)
    assert cached < plain / 4, (plain, cached)


def test_text_chunks() -> None:
    groups = [("eng", ["a", "b", "c"]), ("fra", ["d"])]
    assert text_chunks(groups, 2) == [("eng", ["a", "b"]), ("eng", ["c"]), ("fra", ["d"])]
    with pytest.raises(ValueError, match=">= 1"):
        text_chunks(groups, 0)


def test_cached_embeddings_matches_autograd_on_a_function() -> None:
    """The autograd function alone, on a plain quadratic: d/dw sum(g * (x w)^2)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    xs = [torch.randn(2, 4), torch.randn(3, 4)]
    g = torch.randn(5, 3)
    plain = torch.cat([(x @ w) ** 2 for x in xs])
    (plain * g).sum().backward()
    expected, w.grad = w.grad.clone(), None
    out = cached_embeddings(lambda x: (x @ w) ** 2, xs, [w])
    assert not out.grad_fn.next_functions or out.requires_grad
    (out * g).sum().backward()
    torch.testing.assert_close(w.grad, expected)


def test_train_flag_reaches_the_step(tmp_path: Path) -> None:
    from atri.commands.train import build_parser
    from atri.training.config import RunOptions

    args = build_parser().parse_args(["--out", str(tmp_path), "--grad-cache", "8"])
    assert args.grad_cache == 8 and RunOptions(out=tmp_path, cache_dir=tmp_path).grad_cache == 0
