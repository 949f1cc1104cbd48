"""bfloat16 as AMD's released modeling code computes it, re-derived op by op in this file.

In bfloat16 every rounding step shows, so the reference below spells out where AMD's
``hf_instella`` rounds: RMSNorm's statistics in float32, cast back, THEN times the (bf16)
weight; RoPE angles in float32, cos/sin cast to bf16, the rotation in bf16; SDPA on bf16 (or, on
the eager path, scores in bf16, softmax in float32, probabilities cast back). The model must
give these logits bit for bit. ``weight_before_cast`` builds the old order (the weight applied
in float32 before the cast), which a test shows the comparison tells apart.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from paperlab.instella.configuration import InstellaConfig
from paperlab.instella.modeling import InstellaForCausalLM

from .conftest import randomized_model, tiny_config


def bf16_reference(
    sd: dict[str, torch.Tensor], cfg: InstellaConfig, ids: torch.Tensor, *, eager: bool = False,
    weight_before_cast: bool = False,
) -> torch.Tensor:
    """Logits (B, T, V) of an unpadded batch, in the dtype of ``sd``, in AMD's order of casts."""
    dt = sd["lm_head.weight"].dtype
    H, KV = cfg.num_attention_heads, int(cfg.num_key_value_heads)  # type: ignore[arg-type]
    D = cfg.hidden_size // H
    B, T = ids.shape

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        n = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)
        if weight_before_cast:
            return (w.float() * n).to(dt)
        return w * n.to(dt)

    inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    angles = torch.arange(T).float()[:, None] * inv_freq[None, :]  # (T, D/2), float32
    emb = torch.cat([angles, angles], -1)
    cos, sin = emb.cos().to(dt), emb.sin().to(dt)  # (T, D)

    def rope(x: torch.Tensor) -> torch.Tensor:  # (B, h, T, D), in dt
        rot = torch.cat([-x[..., D // 2:], x[..., : D // 2]], -1)
        return x * cos + rot * sin

    x = sd["model.embed_tokens.weight"][ids]  # (B, T, C)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "pre_attention_layernorm.weight"])
        q = rms(h @ sd[p + "self_attn.q_proj.weight"].T, sd[p + "self_attn.q_norm.weight"])
        k = rms(h @ sd[p + "self_attn.k_proj.weight"].T, sd[p + "self_attn.k_norm.weight"])
        v = h @ sd[p + "self_attn.v_proj.weight"].T
        q = rope(q.view(B, T, H, D).transpose(1, 2))
        k = rope(k.view(B, T, KV, D).transpose(1, 2)).repeat_interleave(H // KV, 1)
        v = v.view(B, T, KV, D).transpose(1, 2).repeat_interleave(H // KV, 1)
        if eager:
            scores = q @ k.transpose(2, 3) / math.sqrt(D)
            scores = scores + torch.full((T, T), torch.finfo(dt).min, dtype=dt).triu(1)
            a = F.softmax(scores, -1, dtype=torch.float32).to(dt) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = a.transpose(1, 2).reshape(B, T, H * D) @ sd[p + "self_attn.o_proj.weight"].T
        x = x + a
        f = rms(x, sd[p + "pre_feedforward_layernorm.weight"])
        gate, up = f @ sd[p + "mlp.gate_proj.weight"].T, f @ sd[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    return rms(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T


def _bf16_model() -> InstellaForCausalLM:
    """Multi-head as released, norm weights near 1 as trained, in bfloat16."""
    cfg = tiny_config(vocab_size=257, hidden_size=64, intermediate_size=172, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=4)
    model = randomized_model(cfg, seed=11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model.to(torch.bfloat16)  # type: ignore[no-any-return]


IDS = torch.randint(2, 257, (2, 24), generator=torch.Generator().manual_seed(0))


def test_bf16_logits_are_amds_bit_for_bit_on_sdpa_and_eager() -> None:
    model = _bf16_model()
    sd = model.state_dict()
    for impl in ("sdpa", "eager"):
        model.set_attn_implementation(impl)
        with torch.no_grad():
            got = model(IDS).logits
            want = bf16_reference(sd, model.config, IDS, eager=impl == "eager")
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, want), (impl, (got.float() - want.float()).abs().max().item())


def test_the_comparison_tells_the_old_order_apart() -> None:
    """The weight applied in float32 before the cast (one rounding instead of two) gives other
    bf16 logits: the test above fails on that order."""
    model = _bf16_model()
    with torch.no_grad():
        got = model(IDS).logits
        old = bf16_reference(model.state_dict(), model.config, IDS, weight_before_cast=True)
    differ = (got.float() - old.float()).abs()
    assert differ.max() > 0.01 and (differ > 0).float().mean() > 0.2


def test_bf16_greedy_generation_matches_the_reference_argmax() -> None:
    """The cached decode in bf16 picks, at every step, the token the reference's full forward
    picks after the same prefix (the reference is causal, so one pass over the whole generated
    sequence gives every step's choice)."""
    model = _bf16_model()
    prompt = IDS[:1, :6]
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                             pad_token_id=1, eos_token_id=None)
        choices = bf16_reference(model.state_dict(), model.config, out[:, :-1]).argmax(-1)
    assert torch.equal(out[:, 6:], choices[:, 5:])
