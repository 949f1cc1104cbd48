"""The Instella decoder as a transformers model, read top to bottom.

A Llama-style pre-norm decoder with OLMo-2's full-width QK-norm (PAPERS.md section 6):

    x = embed(ids)
    for each layer:
        h = x + o_proj(attn(pre_attention_layernorm(x)))      # q/k normed over the full width
        x = h + mlp(pre_feedforward_layernorm(h))             # SwiGLU
    logits = lm_head(norm(x))

It is not transformers' Olmo2, which normalises each sublayer's *output*. Parameter names are
the released ones, so a released checkpoint loads with no renaming. Attention runs through
``torch.nn.functional.scaled_dot_product_attention``; the KV cache is transformers' own
``DynamicCache`` so that ``generate`` works unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from paperlab.instella.configuration import InstellaConfig


class InstellaRMSNorm(nn.Module):
    """RMSNorm computed in float32 (the weight too), cast back to the input dtype at the end."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 if given that
        # x * rsqrt(mean(x^2) + eps) * weight, in one fused op (the unfused chain of five
        # elementwise ops was a measurable share of a bf16 forward on CPU)
        return F.rms_norm(x.to(wide), (x.shape[-1],), self.weight.to(wide), self.eps).to(x.dtype)


def rope_cos_sin(
    config: InstellaConfig, position_ids: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (B, T, D), for the positions (B, T).

    Computed per call from the config (a few hundred flops) so that a raised ``rope_theta`` or a
    dynamic NTK base needs no cached buffer to be kept in sync.
    """
    d = int(config.head_dim)  # type: ignore[arg-type]
    base = config.rope_base
    wide = torch.promote_types(dtype, torch.float32)  # angles never below float32
    pos = position_ids.to(wide)  # (B, T)
    if config.rope_type == "linear":
        pos = pos / config.rope_factor  # positions squeezed into the trained range
    elif config.rope_type == "dynamic":
        # NTK-aware: once the sequence outgrows the trained length, raise the base with it.
        seq_len = int(position_ids.max().item()) + 1
        trained = config.max_position_embeddings
        if seq_len > trained:
            f = config.rope_factor
            base = base * ((f * seq_len / trained) - (f - 1)) ** (d / (d - 2))
    exponents = torch.arange(0, d, 2, dtype=wide, device=pos.device) / d  # (D/2,)
    inv_freq = 1.0 / (base**exponents)  # (D/2,)
    angles = pos[..., None] * inv_freq  # (B, T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (B, T, D) rotate-half layout
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE. x: (B, H, T, D); cos, sin: (B, T, D)."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


class InstellaAttention(nn.Module):
    """Multi-head (or grouped-query) attention with QK-norm over the full projection width."""

    def __init__(self, config: InstellaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.num_attention_heads
        self.n_kv = int(config.num_key_value_heads)  # type: ignore[arg-type]
        self.head_dim = int(config.head_dim)  # type: ignore[arg-type]
        c, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(c, self.n_head * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(c, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(c, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, c, bias=bias)
        self.o_proj.residual_depth = layer_idx + 1  # type: ignore[assignment]  # read by the init
        self.q_norm = InstellaRMSNorm(self.n_head * self.head_dim, config.rms_norm_eps)
        self.k_norm = InstellaRMSNorm(self.n_kv * self.head_dim, config.rms_norm_eps)
        self.dropout = config.attention_dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        # QK-norm spans all heads at once, before the split and before RoPE.
        q = self.q_norm(self.q_proj(x))  # (B, T, H*D)
        k = self.k_norm(self.k_proj(x))  # (B, T, Hkv*D)
        v = self.v_proj(x)  # (B, T, Hkv*D)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.get_seq_length(self.layer_idx)
            k, v = cache.update(k, v, self.layer_idx)  # (B, Hkv, S, D), S = past + T
        # Without a mask, SDPA's own causal flag is exact only when there is no cached past
        # (it aligns the triangle top-left); a single new token sees everything anyway.
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and past == 0 and T > 1,
            enable_gqa=self.n_kv != self.n_head,
        )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, H*D)
        return self.o_proj(y)  # (B, T, C)


class InstellaMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: InstellaConfig, layer_idx: int) -> None:
        super().__init__()
        c, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(c, f, bias=False)
        self.up_proj = nn.Linear(c, f, bias=False)
        self.down_proj = nn.Linear(f, c, bias=False)
        self.down_proj.residual_depth = layer_idx + 1  # type: ignore[assignment]
        if config.hidden_act != "silu":
            raise ValueError(f"hidden_act {config.hidden_act!r} is not silu (Instella uses SwiGLU)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)


class InstellaDecoderLayer(nn.Module):
    """Pre-norm block: a norm before each sublayer, the residual around it."""

    def __init__(self, config: InstellaConfig, layer_idx: int) -> None:
        super().__init__()
        self.pre_attention_layernorm = InstellaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = InstellaAttention(config, layer_idx)
        self.pre_feedforward_layernorm = InstellaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = InstellaMLP(config, layer_idx)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None,
    ) -> torch.Tensor:
        h = x + self.self_attn(self.pre_attention_layernorm(x), cos, sin, mask, cache)
        return h + self.mlp(self.pre_feedforward_layernorm(h))


def attention_mask_4d(
    attention_mask: torch.Tensor | None, past: int, T: int, device: torch.device
) -> torch.Tensor | None:
    """Boolean (B, 1, T, S) mask for SDPA (True = may attend), or None when the causal flag does.

    ``attention_mask`` is the usual (B, S) 0/1 padding mask over cached + new positions.
    """
    no_padding = attention_mask is None or bool(attention_mask.all())
    if no_padding and (past == 0 or T == 1):
        return None
    S = past + T
    q_pos = torch.arange(past, S, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, S)
    if not no_padding:
        assert attention_mask is not None
        mask = mask & attention_mask[:, None, None, -S:].bool()  # (B, 1, T, S)
        # A padding query would see nothing and SDPA would return NaN for it; let it see
        # itself. Real tokens never attend to padding, so their outputs are unchanged.
        mask = mask | (k_pos == q_pos)[None, None]
    return mask


class InstellaPreTrainedModel(PreTrainedModel):
    config_class = InstellaConfig
    config: InstellaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["InstellaDecoderLayer"]
    _supports_sdpa = True
    _can_compile_fullgraph = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Mitchell-style init, as released: truncated normal, std 1/sqrt(fan_in), cut at 3 std;
        residual output projections (o_proj, down_proj) further divided by sqrt(2 (layer + 1))."""
        if isinstance(module, nn.Linear):
            std = 1.0 / math.sqrt(module.in_features)
            depth = getattr(module, "residual_depth", None)
            if depth is not None:
                std /= math.sqrt(2.0 * depth)
            init.trunc_normal_(module.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            std = 1.0 / math.sqrt(module.embedding_dim)
            init.trunc_normal_(module.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
        elif isinstance(module, InstellaRMSNorm):
            init.ones_(module.weight)


class InstellaModel(InstellaPreTrainedModel):
    """The decoder stack without the LM head (parameter prefix ``model.``)."""

    def __init__(self, config: InstellaConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            InstellaDecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = InstellaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value  # type: ignore[assignment]

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None:
                # Left padding: count real tokens so every row's first real token is position 0.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=x.device)[None].expand(B, T)
        cos, sin = rope_cos_sin(self.config, position_ids, x.dtype)  # (B, T, D) each
        mask = attention_mask_4d(attention_mask, past, T, x.device)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x), cache=cache)


class InstellaForCausalLM(InstellaPreTrainedModel, GenerationMixin):
    """Instella with its (untied) LM head; loads the released checkpoints as they are."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: InstellaConfig) -> None:
        super().__init__(config)
        self.model = InstellaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        h = out.last_hidden_state  # (B, T, C)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]  # generation only needs the last position
        logits = self.lm_head(h)  # (B, T, V)
        loss = None
        if labels is not None:
            # Next-token loss; -100 marks positions without a target (padding, prompt tokens).
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache)


def register() -> None:
    """Register the classes with transformers' Auto factories (idempotent)."""
    from transformers import AutoModel, AutoModelForCausalLM

    AutoModel.register(InstellaConfig, InstellaModel, exist_ok=True)
    AutoModelForCausalLM.register(InstellaConfig, InstellaForCausalLM, exist_ok=True)


register()
