"""The Instella decoder as a transformers model, read top to bottom.

A Llama-style pre-norm decoder with OLMo-2's full-width QK-norm (PAPERS.md section 6):

    x = embed(ids)
    for each layer:
        h = x + o_proj(attn(pre_attention_layernorm(x)))      # q/k normed over the full width
        x = h + mlp(pre_feedforward_layernorm(h))             # SwiGLU
    logits = lm_head(norm(x))

It is not transformers' Olmo2, which normalises each sublayer's *output*. Parameter names are
the released ones, so a released checkpoint loads with no renaming; the layers (layers.py) cast
in the order of AMD's modeling code, so bfloat16 runs give its logits. What training and serving
at scale expect of a transformers class is here: ``attn_implementation`` "sdpa" (default) or
"eager", ``output_hidden_states`` / ``output_attentions``, ``gradient_checkpointing_enable()``,
transformers' dynamic and static KV caches, ``device_map`` / ``low_cpu_mem_usage`` loading.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import logging
from transformers.utils.deprecation import deprecate_kwarg

from paperlab.instella.configuration import InstellaConfig
from paperlab.instella.layers import (
    AttentionMasks,
    InstellaDecoderLayer,
    InstellaRMSNorm,
    rope_cos_sin,
)

logger = logging.get_logger(__name__)


class InstellaPreTrainedModel(PreTrainedModel):
    config_class = InstellaConfig
    config: InstellaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InstellaDecoderLayer"]
    _supports_sdpa = True  # "sdpa" (the default) and "eager"; no flash-attention kernels
    _can_compile_fullgraph = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Mitchell-style init, as released: truncated normal, std 1/sqrt(fan_in), cut at 3 std;
        residual output projections (o_proj, down_proj) further divided by sqrt(2 (layer + 1)).
        Every embedding row is drawn, the padding row too, as AMD's pretraining code does."""
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
        # padding_idx as in AMD's released class: the padding row gets no gradient
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        cfg = self.config
        want_attn = bool(cfg.output_attentions if output_attentions is None else output_attentions)
        want_hidden = bool(cfg.output_hidden_states if output_hidden_states is None else output_hidden_states)
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        checkpointing = self.training and torch.is_grad_enabled() and any(
            layer.gradient_checkpointing for layer in self.layers
        )
        if checkpointing:
            # a recomputed layer would write its keys twice: no cache (say so only if asked for)
            if use_cache or cache is not None:
                logger.warning_once("gradient checkpointing is on while training: the KV cache is off")
            use_cache, cache = False, None
        use_cache = cfg.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=cfg)
        past = int(cache.get_seq_length()) if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                # Left padding: count real tokens so every row's first real token is position 0.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=x.device)[None].expand(B, T)
        cos, sin = rope_cos_sin(cfg, position_ids, x.dtype)  # (B, T, D) each
        masks = AttentionMasks(attention_mask, past, T, x.device)
        hidden: tuple[torch.Tensor, ...] = ()
        attentions: tuple[torch.Tensor, ...] = ()
        for layer in self.layers:
            if want_hidden:
                hidden += (x,)  # the input of each layer: embeddings first
            x, weights = layer(x, cos, sin, masks, cache, want_attn)
            if want_attn:
                assert weights is not None
                attentions += (weights,)
        x = self.norm(x)
        out = BaseModelOutputWithPast(
            last_hidden_state=x,
            cache=cache,
            hidden_states=hidden + (x,) if want_hidden else None,  # the last one after the norm
            attentions=attentions if want_attn else None,
        )
        if not _return_dict(cfg, return_dict):
            return out.to_tuple()  # type: ignore[return-value]  # return_dict=False, as transformers allows
        return out


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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
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
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        h = out.last_hidden_state  # (B, T, C)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]  # generation only needs the last position
        logits = self.lm_head(h)  # (B, T, V)
        loss = None
        if labels is not None:
            # Next-token loss in float32 (transformers' own, so a Trainer's num_items_in_batch
            # is honoured); -100 marks positions without a target (padding, prompt tokens).
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size,
                                      **kwargs)
        result = CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=out.cache,
            hidden_states=out.hidden_states, attentions=out.attentions,
        )
        if not _return_dict(self.config, return_dict):
            return result.to_tuple()  # type: ignore[return-value]
        return result


def _return_dict(config: InstellaConfig, asked: bool | None) -> bool:
    return bool(getattr(config, "return_dict", True) if asked is None else asked)


def register() -> None:
    """Register the classes with transformers' Auto factories (idempotent)."""
    from transformers import AutoModel, AutoModelForCausalLM

    AutoModel.register(InstellaConfig, InstellaModel, exist_ok=True)
    AutoModelForCausalLM.register(InstellaConfig, InstellaForCausalLM, exist_ok=True)


register()
