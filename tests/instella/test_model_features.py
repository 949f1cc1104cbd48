"""What training and serving at scale expect of a transformers class: attention implementations,
hidden states and attention weights, gradient checkpointing, the static cache, 4D masks,
the embedding's padding row, and low-memory loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from paperlab.instella.modeling import InstellaForCausalLM

from .conftest import randomized_model, tiny_config

IDS = torch.randint(2, 97, (2, 11), generator=torch.Generator().manual_seed(3))
PADDED = torch.tensor([[1, 1, 1, 7, 7, 3, 9, 50], [4, 8, 15, 16, 23, 42, 5, 6]])
PAD_MASK = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8])


class CountCalls(TorchFunctionMode):
    """Counts the torch functions a block of code really calls (nothing is replaced)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


def _logits(model: InstellaForCausalLM, ids: torch.Tensor, **kw: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kw).logits


# -- attention implementations ----------------------------------------------------------------

def test_eager_is_honoured_and_sdpa_is_the_default(tiny_model: InstellaForCausalLM) -> None:
    assert tiny_model.config._attn_implementation == "sdpa"
    for impl, want_sdpa_calls in (("sdpa", 3), ("eager", 0)):
        tiny_model.set_attn_implementation(impl)
        with CountCalls() as calls:
            _logits(tiny_model, IDS)
        assert calls.names.count("scaled_dot_product_attention") == want_sdpa_calls, impl


def test_eager_equals_sdpa_in_float32(tiny_model: InstellaForCausalLM) -> None:
    """Unpadded, left-padded, and token by token through the cache."""
    outs = {}
    for impl in ("sdpa", "eager"):
        tiny_model.set_attn_implementation(impl)
        cache, steps = None, []
        with torch.no_grad():
            for t in range(IDS.shape[1]):
                o = tiny_model(IDS[:, t : t + 1], cache=cache, use_cache=True)
                cache = o.cache
                steps.append(o.logits)
        outs[impl] = (_logits(tiny_model, IDS), _logits(tiny_model, PADDED, attention_mask=PAD_MASK),
                      torch.cat(steps, 1))
    for sdpa, eager in zip(outs["sdpa"], outs["eager"], strict=True):
        assert torch.allclose(sdpa, eager, atol=1e-5, rtol=1e-5)


def test_attn_implementation_at_load_time(released_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(released_dir, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    with CountCalls() as calls:
        _logits(model, IDS)
    assert "scaled_dot_product_attention" not in calls.names


# -- hidden states and attention weights ------------------------------------------------------

def test_output_hidden_states_as_amds_class_gives_them(tiny_model: InstellaForCausalLM) -> None:
    """L + 1 states: the embeddings, the input of every later layer, then the final norm's output."""
    layer_outputs: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, a, out: layer_outputs.append(out[0]))
             for layer in tiny_model.model.layers]
    with torch.no_grad():
        out = tiny_model(IDS, output_hidden_states=True)
    for h in hooks:
        h.remove()
    states = out.hidden_states
    assert len(states) == tiny_model.config.num_hidden_layers + 1
    assert torch.equal(states[0], tiny_model.model.embed_tokens(IDS))
    for i in range(len(layer_outputs) - 1):
        assert torch.equal(states[i + 1], layer_outputs[i])
    with torch.no_grad():
        assert torch.equal(states[-1], tiny_model.model.norm(layer_outputs[-1]))
        assert torch.equal(tiny_model.lm_head(states[-1]), out.logits)
    assert out.attentions is None


def test_output_attentions_on_sdpa_falls_back_to_eager_for_that_call(tiny_model: InstellaForCausalLM) -> None:
    out = tiny_model(PADDED, attention_mask=PAD_MASK, output_attentions=True)
    assert tiny_model.config._attn_implementation == "sdpa"  # unchanged
    assert len(out.attentions) == 3
    for a in out.attentions:
        assert a.shape == (2, 4, 8, 8)
        assert torch.allclose(a.sum(-1), torch.ones(2, 4, 8), atol=1e-5)
        assert torch.all(a.triu(1) == 0)  # causal
        assert torch.all(a[0, :, 3:, :3] == 0)  # real tokens never attend to padding
    assert torch.allclose(out.logits, _logits(tiny_model, PADDED, attention_mask=PAD_MASK), atol=1e-5)


def test_return_dict_false_gives_a_tuple(tiny_model: InstellaForCausalLM) -> None:
    out = tiny_model(IDS, labels=IDS, return_dict=False, use_cache=False)
    assert isinstance(out, tuple) and out[0].dim() == 0 and out[1].shape == (2, 11, 97)


# -- gradient checkpointing -------------------------------------------------------------------

def _loss_and_grads(model: InstellaForCausalLM) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    loss = model(PADDED, attention_mask=PAD_MASK, labels=PADDED.masked_fill(PAD_MASK == 0, -100)).loss
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_gradient_checkpointing_gives_the_same_loss_and_gradients() -> None:
    model = randomized_model(tiny_config()).train()
    loss, grads = _loss_and_grads(model)
    model.gradient_checkpointing_enable()
    attn_calls: list[int] = []
    hook = model.model.layers[0].self_attn.register_forward_hook(lambda *a: attn_calls.append(1))
    loss_ckpt, grads_ckpt = _loss_and_grads(model)
    hook.remove()
    assert len(attn_calls) == 2  # the forward, and its recomputation in the backward pass
    assert loss_ckpt == pytest.approx(loss, abs=1e-5)
    assert len(grads) == len(grads_ckpt) == len(list(model.parameters()))
    for g, gc in zip(grads, grads_ckpt, strict=True):
        assert torch.allclose(g, gc, atol=1e-5)
    model.gradient_checkpointing_disable()
    assert not any(layer.gradient_checkpointing for layer in model.model.layers)


def test_gradient_checkpointing_turns_the_cache_off_while_training() -> None:
    model = randomized_model(tiny_config()).train()
    model.gradient_checkpointing_enable()
    out = model(IDS, use_cache=True)
    assert out.cache is None
    model.eval()
    with torch.no_grad():  # generation from a model with checkpointing on still caches
        assert model(IDS, use_cache=True).cache is not None


# -- caches and masks -------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_static_cache_generate_equals_the_dynamic_cache(tiny_model: InstellaForCausalLM, impl: str) -> None:
    tiny_model.set_attn_implementation(impl)
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=1, eos_token_id=None)
    with torch.no_grad():
        for ids, mask in ((PADDED[1:], None), (PADDED, PAD_MASK)):
            dynamic = tiny_model.generate(ids, attention_mask=mask, **kw)
            static = tiny_model.generate(ids, attention_mask=mask, cache_implementation="static", **kw)
            assert torch.equal(dynamic, static)


def test_a_4d_mask_keeps_packed_documents_apart(tiny_model: InstellaForCausalLM) -> None:
    """Two documents packed in one row, a block-diagonal causal mask and positions restarting at
    each document: the same logits as each document alone (bool and additive float masks)."""
    a, b = IDS[0, :5], IDS[1, :6]
    packed = torch.cat([a, b])[None]
    doc = torch.tensor([0] * 5 + [1] * 6)
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(11, 11, dtype=torch.bool).tril()
    positions = torch.cat([torch.arange(5), torch.arange(6)])[None]
    additive = torch.zeros(11, 11).masked_fill(~allowed, torch.finfo(torch.float32).min)
    alone = torch.cat([_logits(tiny_model, a[None]), _logits(tiny_model, b[None])], 1)
    for mask in (allowed[None, None], additive[None, None]):
        for impl in ("sdpa", "eager"):
            tiny_model.set_attn_implementation(impl)
            got = _logits(tiny_model, packed, attention_mask=mask, position_ids=positions)
            assert torch.allclose(got, alone, atol=1e-5), impl


# -- the embedding's padding row and loading ---------------------------------------------------

def test_padding_row_gets_no_gradient_as_released(tiny_model: InstellaForCausalLM) -> None:
    emb = tiny_model.model.embed_tokens
    assert emb.padding_idx == tiny_model.config.pad_token_id == 1
    tiny_model.train()
    tiny_model(PADDED, attention_mask=PAD_MASK, labels=PADDED).loss.backward()
    assert emb.weight.grad is not None
    assert torch.all(emb.weight.grad[1] == 0) and emb.weight.grad[7].abs().sum() > 0
    assert emb.weight[1].abs().sum() > 0  # the init draws every row, as AMD's pretraining does


@pytest.mark.parametrize("kw", [dict(low_cpu_mem_usage=True), dict(device_map="auto"),
                                dict(low_cpu_mem_usage=True, device_map="cpu", dtype=torch.bfloat16)])
def test_low_memory_loading_of_a_sharded_release(released_dir: Path, tiny_model: InstellaForCausalLM,
                                                 kw: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(released_dir, **kw)
    want = _logits(tiny_model.to(model.dtype), IDS)
    assert torch.allclose(_logits(model, IDS).float(), want.float(), atol=1e-5 if model.dtype == torch.float32 else 0)
