"""The parts of one Instella decoder layer, each cast in the order of AMD's released modeling code.

In float32 the order of casts changes nothing; in bfloat16 (the dtype the 3B models are used in)
every rounding step shows in the logits. So each op below rounds where AMD's ``hf_instella`` code
rounds:

* RMSNorm: statistics and scaling in float32, cast back to the input dtype, THEN times the
  weight (a bf16 product when the model is bf16). Applying the weight in float32 before the
  cast rounds once instead of twice and moves 3B bf16 logits by tenths.
* RoPE: inverse frequencies and angles in float32 (on the CPU, as AMD's buffer is made), cos and
  sin cast to the activation dtype, the rotation itself in that dtype.
* Attention: SDPA on the activation dtype (causal flag when there is no padding and no past);
  the eager path takes ``q k^T / sqrt(d)`` in the activation dtype, the softmax in float32,
  then casts the probabilities back before multiplying by V.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from transformers.cache_utils import Cache

    from paperlab.instella.configuration import InstellaConfig


class InstellaRMSNorm(nn.Module):
    """x / rms(x) in float32 (float64 for a float64 model), cast back, then times the weight."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * wide.to(x.dtype)  # the weight after the cast: see the module docstring

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


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
    # made on the CPU (as AMD's inv_freq buffer is), so every device uses the same frequencies
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=wide) / d))  # (D/2,)
    angles = pos[..., None] * inv_freq.to(pos.device)  # (B, T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (B, T, D) rotate-half layout
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE. x: (B, H, T, D); cos, sin: (B, T, D)."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


class AttentionMasks:
    """The boolean (B|1, 1, T, S) masks of one forward pass (True = may attend), built once per key
    length S and shared by every layer.

    ``given`` is what the caller passed as ``attention_mask``: None, the usual (B, L) 0/1 padding
    mask over cached + new positions, or a ready (B, 1, T, S) mask, boolean (True = may attend)
    or additive float (0 = may attend), as ``generate`` builds for a static cache and as packed
    documents need. The key length S is what the cache returns: past + T for a dynamic cache,
    the preallocated length for a static one (whose unwritten slots lie in every query's future,
    so the causal part masks them).
    """

    def __init__(self, given: torch.Tensor | None, past: int, T: int, device: torch.device) -> None:
        self.past, self.T, self.device = past, T, device
        self.padding: torch.Tensor | None = None  # (B, L) bool, only when some position is padding
        self.full: torch.Tensor | None = None  # (B, 1, T, S') bool
        if given is not None and given.dim() == 4:
            self.full = given if given.dtype == torch.bool else given == 0
        elif given is not None and not bool(given.all()):
            self.padding = given.bool()
        self._built: dict[int, torch.Tensor] = {}

    def get(self, S: int, explicit: bool) -> torch.Tensor | None:
        """The mask for keys of length S; None where SDPA's causal flag (or nothing) is exact,
        unless ``explicit`` (the eager path always wants one when T > 1)."""
        past, T = self.past, self.T
        # SDPA's causal flag aligns the triangle top-left: exact only with no cached past; a
        # single new token sees every written key anyway.
        flag_is_exact = past + T == S and (past == 0 or T == 1)
        if self.padding is None and self.full is None and flag_is_exact and (T == 1 or not explicit):
            return None
        if S not in self._built:
            self._built[S] = self._build(S)
        return self._built[S]

    def _build(self, S: int) -> torch.Tensor:
        q_pos = torch.arange(self.past, self.past + self.T, device=self.device)[:, None]  # (T, 1)
        k_pos = torch.arange(S, device=self.device)[None, :]  # (1, S)
        if self.full is not None:
            mask = self.full[..., :S]  # (B, 1, T, S)
        else:
            mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, S)
            if self.padding is None:
                return mask
            pad = self.padding
            if pad.shape[-1] >= S:
                pad = pad[:, -S:]
            else:  # a static cache's unwritten tail: already masked as the future
                pad = F.pad(pad, (0, S - pad.shape[-1]), value=True)
            mask = mask & pad[:, None, None, :]  # (B, 1, T, S)
        # A padding query would see nothing: SDPA would return NaN for it, and the NaN would
        # reach real rows through V at the next layer. Let it see itself; real tokens never
        # attend to padding, so their outputs are unchanged.
        return mask | (k_pos == q_pos)[None, None]


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out, in AMD's eager order. q: (B, H, T, D); k, v: (B, Hkv, S, D).

    Returns the output (B, H, T, D) and the probabilities (B, H, T, S).
    """
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, H, S, D)
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    probs = F.dropout(probs, p=dropout, training=dropout > 0)
    return torch.matmul(probs, v), probs


class InstellaAttention(nn.Module):
    """Multi-head (or grouped-query) attention with QK-norm over the full projection width."""

    def __init__(self, config: InstellaConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config  # read per call: set_attn_implementation may change it after init
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

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        masks: AttentionMasks,
        cache: Cache | None,
        want_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = x.shape
        # QK-norm spans all heads at once, before the split and before RoPE.
        q = self.q_norm(self.q_proj(x))  # (B, T, H*D)
        k = self.k_norm(self.k_proj(x))  # (B, T, Hkv*D)
        v = self.v_proj(x)  # (B, T, Hkv*D)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, Hkv, S, D)
        dropout = self.config.attention_dropout if self.training else 0.0
        # Weights exist only on the eager path; asking for them falls back to it for this call.
        eager = want_weights or self.config._attn_implementation == "eager"
        mask = masks.get(k.shape[2], explicit=eager)
        weights = None
        if eager:
            y, weights = eager_attention(q, k, v, mask, dropout)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout,
                is_causal=mask is None and T > 1, enable_gqa=self.n_kv != self.n_head,
            )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, H*D)
        return self.o_proj(y), weights  # (B, T, C)


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
    """Pre-norm block: a norm before each sublayer, the residual around it.

    ``gradient_checkpointing`` is switched on by ``model.gradient_checkpointing_enable()``
    (transformers sets it, with ``_gradient_checkpointing_func``, on every module that has the
    attribute). The checkpoint wraps this layer's own computation, not its ``__call__``, so
    module hooks (FSDP2's all-gather, accelerate's offload) stay outside the recomputation.
    """

    gradient_checkpointing = False
    _gradient_checkpointing_func: Callable[..., Any]

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
        masks: AttentionMasks,
        cache: Cache | None,
        want_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # a cache cannot be written twice (forward and recompute); the model drops it
            out: tuple[torch.Tensor, torch.Tensor | None] = self._gradient_checkpointing_func(
                self._block, x, cos, sin, masks, None, want_weights
            )
            return out
        return self._block(x, cos, sin, masks, cache, want_weights)

    def _block(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        masks: AttentionMasks,
        cache: Cache | None,
        want_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.self_attn(self.pre_attention_layernorm(x), cos, sin, masks, cache, want_weights)
        h = x + a
        return h + self.mlp(self.pre_feedforward_layernorm(h)), weights
