"""Exactness of the Instella model against a plain float64 re-derivation from the published facts,
cached decoding against the full forward, and greedy generation against step-by-step argmax."""

from __future__ import annotations

import math

import pytest
import torch

from paperlab.instella.configuration import InstellaConfig
from paperlab.instella.info import count_parameters
from paperlab.instella.modeling import InstellaForCausalLM

from .conftest import randomized_model, tiny_config


def reference_logits(
    sd: dict[str, torch.Tensor], cfg: InstellaConfig, ids: list[int], *, per_head_qk_norm: bool = False,
    post_norm: bool = False, position_scale: float = 1.0,
) -> torch.Tensor:
    """Instella written out by hand, one position and one head at a time, in float64.

    PAPERS.md 6: pre-norm blocks; RMSNorm (eps 1e-5, learned weight) over the WHOLE q_proj and
    k_proj outputs before the head split and before rotate-half RoPE; SwiGLU; untied head.
    ``per_head_qk_norm`` / ``post_norm`` build the wrong architectures a test must tell apart;
    ``position_scale`` divides positions (linear RoPE scaling).
    """
    w = {k: v.double() for k, v in sd.items()}
    C, H, KV = cfg.hidden_size, cfg.num_attention_heads, int(cfg.num_key_value_heads)
    D, eps, T = C // H, cfg.rms_norm_eps, len(ids)
    theta = cfg.rope_base

    def rms(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g * x / torch.sqrt((x * x).mean() + eps)

    def rope(v: torch.Tensor, pos: int) -> torch.Tensor:  # v: (D,)
        out = torch.empty_like(v)
        half = D // 2
        for i in range(half):
            angle = pos / position_scale * theta ** (-2.0 * i / D)
            c, s = math.cos(angle), math.sin(angle)
            out[i] = v[i] * c - v[i + half] * s
            out[i + half] = v[i + half] * c + v[i] * s
        return out

    x = [w["model.embed_tokens.weight"][t].clone() for t in ids]
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        g_attn, g_ff = w[p + "pre_attention_layernorm.weight"], w[p + "pre_feedforward_layernorm.weight"]
        qs, ks, vs = [], [], []
        for t in range(T):
            h = x[t] if post_norm else rms(x[t], g_attn)
            q, k, v = w[p + "self_attn.q_proj.weight"] @ h, w[p + "self_attn.k_proj.weight"] @ h, w[p + "self_attn.v_proj.weight"] @ h
            if per_head_qk_norm:
                qn, kn = w[p + "self_attn.q_norm.weight"], w[p + "self_attn.k_norm.weight"]
                q = torch.cat([rms(q[i * D:(i + 1) * D], qn[i * D:(i + 1) * D]) for i in range(H)])
                k = torch.cat([rms(k[i * D:(i + 1) * D], kn[i * D:(i + 1) * D]) for i in range(KV)])
            else:
                q, k = rms(q, w[p + "self_attn.q_norm.weight"]), rms(k, w[p + "self_attn.k_norm.weight"])
            qs.append([rope(q[i * D:(i + 1) * D], t) for i in range(H)])
            ks.append([rope(k[i * D:(i + 1) * D], t) for i in range(KV)])
            vs.append([v[i * D:(i + 1) * D] for i in range(KV)])
        new_x = []
        for t in range(T):
            heads = []
            for i in range(H):
                j = i // (H // KV)  # the KV head this query head shares
                scores = torch.tensor([float(qs[t][i] @ ks[s][j]) / math.sqrt(D) for s in range(t + 1)],
                                      dtype=torch.float64)
                probs = torch.softmax(scores, 0)
                heads.append(sum(probs[s] * vs[s][j] for s in range(t + 1)))
            attn = w[p + "self_attn.o_proj.weight"] @ torch.cat(heads)
            hh = rms(x[t] + attn, g_attn) if post_norm else x[t] + attn
            f_in = hh if post_norm else rms(hh, g_ff)
            gate, up = w[p + "mlp.gate_proj.weight"] @ f_in, w[p + "mlp.up_proj.weight"] @ f_in
            ff = w[p + "mlp.down_proj.weight"] @ (gate * torch.sigmoid(gate) * up)
            new_x.append(rms(hh + ff, g_ff) if post_norm else hh + ff)
        x = new_x
    return torch.stack([w["lm_head.weight"] @ rms(xt, w["model.norm.weight"]) for xt in x])


def test_forward_matches_float64_rederivation(tiny_model: InstellaForCausalLM) -> None:
    ids = [5, 17, 3, 88, 42, 9, 61]
    ref = reference_logits(tiny_model.state_dict(), tiny_model.config, ids)
    with torch.no_grad():
        got64 = tiny_model.double()(torch.tensor([ids])).logits[0]
        got32 = tiny_model.float()(torch.tensor([ids])).logits[0]
    assert torch.allclose(got64, ref, atol=1e-10, rtol=1e-9)
    assert torch.allclose(got32.double(), ref, atol=1e-4, rtol=1e-4)


def test_rederivation_tells_wrong_architectures_apart(tiny_model: InstellaForCausalLM) -> None:
    """The exactness test can fail: per-head QK-norm or Olmo2's post-norm give other logits."""
    ids = [5, 17, 3, 88]
    sd, cfg = tiny_model.state_dict(), tiny_model.config
    with torch.no_grad():
        got = tiny_model.double()(torch.tensor([ids])).logits[0]
    for wrong in (dict(per_head_qk_norm=True), dict(post_norm=True)):
        assert (reference_logits(sd, cfg, ids, **wrong) - got).abs().max() > 1e-2


def test_multi_head_config_as_released() -> None:
    """Plain multi-head (kv heads = heads) as in the 3B release, odd head count."""
    model = randomized_model(tiny_config(num_attention_heads=2, num_key_value_heads=2), seed=3)
    ids = [1, 2, 3, 50, 60]
    ref = reference_logits(model.state_dict(), model.config, ids)
    with torch.no_grad():
        got = model.double()(torch.tensor([ids])).logits[0]
    assert torch.allclose(got, ref, atol=1e-10, rtol=1e-9)


def _incremental(model: InstellaForCausalLM, ids: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Logits of ``ids`` fed through the KV cache in chunks of the given sizes."""
    cache, out, start = None, [], 0
    for n in chunks:
        o = model(ids[:, start : start + n], cache=cache, use_cache=True)
        cache, start = o.cache, start + n
        out.append(o.logits)
    return torch.cat(out, 1)


def test_cached_decoding_matches_full_forward(tiny_model: InstellaForCausalLM) -> None:
    """In float64, so that a wrong mask or position shows far above round-off (in float32 the
    different SDPA kernels of a full and a one-token pass differ by up to 2e-5 here)."""
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (2, 20))
    model = tiny_model.double()
    with torch.no_grad():
        full = model(ids).logits
        one_by_one = _incremental(model, ids, [1] * 20)
        chunked = _incremental(model, ids, [7, 1, 5, 7])  # prefill with a past, T > 1
    assert torch.allclose(one_by_one, full, atol=1e-10)
    assert torch.allclose(chunked, full, atol=1e-10)


def test_greedy_generate_matches_step_by_step_argmax(tiny_model: InstellaForCausalLM) -> None:
    prompt = torch.tensor([[4, 8, 15, 16, 23, 42]])
    with torch.no_grad():
        out = tiny_model.generate(prompt, max_new_tokens=10, min_new_tokens=10, do_sample=False,
                                  pad_token_id=1, eos_token_id=None)
        seq = prompt
        for _ in range(10):  # no cache: the whole sequence every step
            nxt = tiny_model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_batched_left_padded_generation_matches_single_rows(tiny_model: InstellaForCausalLM) -> None:
    rows = [[4, 8, 15, 16, 23, 42], [7, 7, 3]]
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=1, eos_token_id=None)
    with torch.no_grad():
        singles = [tiny_model.generate(torch.tensor([r]), **kw)[0, len(r):] for r in rows]
        width = max(map(len, rows))
        ids = torch.tensor([[1] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        batched = tiny_model.generate(ids, attention_mask=mask, **kw)[:, width:]
    for single, row in zip(singles, batched, strict=True):
        assert torch.equal(single, row)


def test_padding_leaves_real_positions_unchanged(tiny_model: InstellaForCausalLM) -> None:
    ids = torch.tensor([[9, 10, 11, 12]])
    padded = torch.tensor([[1, 1, 9, 10, 11, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        a = tiny_model(ids).logits
        b = tiny_model(padded, attention_mask=mask).logits[:, 2:]
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.isfinite(tiny_model(padded, attention_mask=mask).logits).all()


@pytest.mark.parametrize("kind", ["linear", "dynamic"])
def test_rope_scaling_as_the_released_config_allows(kind: str) -> None:
    cfg = tiny_config(max_position_embeddings=8, rope_parameters={"rope_type": kind, "factor": 2.0,
                                                                   "rope_theta": 10000.0})
    model = randomized_model(cfg, seed=5)
    ids = list(range(3, 15))  # 12 positions > 8 trained: dynamic raises its base
    T, d, f = len(ids), int(cfg.head_dim), 2.0  # type: ignore[arg-type]
    ref_cfg = tiny_config(max_position_embeddings=8)
    if kind == "dynamic":
        ref_cfg.set_rope_theta(10000.0 * ((f * T / 8) - (f - 1)) ** (d / (d - 2)))
    ref = reference_logits(model.state_dict(), ref_cfg, ids, position_scale=f if kind == "linear" else 1.0)
    with torch.no_grad():
        got = model.double()(torch.tensor([ids])).logits[0]
    assert torch.allclose(got, ref, atol=1e-9)


def test_raised_theta_decodes_consistently_at_4x_training_length() -> None:
    """Instella-Long style: a raised RoPE base, cached vs full forward at 4x max positions."""
    cfg = tiny_config(max_position_embeddings=32)
    cfg.set_rope_theta(514_640.0)
    model = randomized_model(cfg, seed=7)
    torch.manual_seed(2)
    ids = torch.randint(0, 97, (1, 128))
    with torch.no_grad():
        full = model(ids).logits
        inc = _incremental(model, ids, [64] + [1] * 64)
    assert torch.isfinite(full).all()
    assert torch.allclose(inc, full, atol=1e-5)


def test_bfloat16_forward_tracks_float32(tiny_model: InstellaForCausalLM) -> None:
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        f32 = tiny_model(ids).logits
        bf = tiny_model.to(torch.bfloat16)(ids).logits
    assert bf.dtype == torch.bfloat16
    assert (bf.float() - f32).abs().max() < 0.1 * f32.abs().max()


def test_full_3b_parameter_count_on_meta_device() -> None:
    cfg = InstellaConfig()
    with torch.device("meta"):
        model = InstellaForCausalLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == 3_112_675_840
    assert count_parameters(cfg) == 3_112_675_840
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.head_dim, cfg.vocab_size) == (36, 2560, 80, 50304)


def test_labels_give_the_shifted_next_token_loss(tiny_model: InstellaForCausalLM) -> None:
    ids = torch.tensor([[3, 4, 5, 6]])
    labels = torch.tensor([[-100, 4, -100, 6]])  # targets only for positions 1 and 3
    out = tiny_model(ids, labels=labels)
    logp = torch.log_softmax(out.logits[0].double(), -1)
    want = -(logp[0, 4] + logp[2, 6]) / 2
    assert abs(out.loss.item() - want.item()) < 1e-5


def test_mitchell_init_as_released() -> None:
    """Truncated normal, std 1/sqrt(fan-in), cut at 3 std; o_proj and down_proj further divided
    by sqrt(2 (layer + 1)); norms start at 1."""
    cfg = tiny_config(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4)
    torch.manual_seed(0)
    model = InstellaForCausalLM(cfg)
    layer1 = model.model.layers[1]
    cases = {
        "q_proj": (layer1.self_attn.q_proj.weight, 1 / math.sqrt(256)),
        "o_proj": (layer1.self_attn.o_proj.weight, 1 / math.sqrt(256) / math.sqrt(4)),
        "down_proj": (layer1.mlp.down_proj.weight, 1 / math.sqrt(512) / math.sqrt(4)),
        "embed": (model.model.embed_tokens.weight, 1 / math.sqrt(256)),
    }
    for name, (w, std) in cases.items():
        # a normal truncated at +-3 std has a std of 0.9866 std
        assert w.std().item() == pytest.approx(0.9866 * std, rel=0.03), name
        assert w.abs().max().item() <= 3 * std + 1e-7, name
    assert torch.all(layer1.pre_attention_layernorm.weight == 1)
    assert torch.all(layer1.self_attn.q_norm.weight == 1)
