"""The joint model: one bidirectional transformer over text words and image codes.

Sequence layout (fixed length, so learned positions also tell the modality apart)::

    [prompt words, padded] [<boi> input image codes <eoi>] [<boi> output image <eoi>] [output text]

Image code ``k`` has token id ``len(WORDS) + k`` (codes after the text vocabulary); ``<mask>``
is the one mask token. Generation prompts have no input image: its slots hold ``<noimg>``.
Dropping the condition (for classifier-free guidance) blanks the prompt to ``<pad>`` and the
input image to ``<noimg>``. Logits are restricted per position to its modality (words at text
positions, codes at image positions), the same at training and sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from paperlab.paradiff.config import ModelConfig
from paperlab.paradiff.task import PROMPT_LEN, SPECIALS, TEXT_LEN, WORDS

__all__ = ["BOI", "EOI", "EOS", "MASK", "NOIMG", "PAD", "Layout", "ParaDiffModel"]

WORD_ID = {w: i for i, w in enumerate(WORDS)}
PAD, MASK, BOI, EOI, EOS, NOIMG = (WORD_ID[s] for s in SPECIALS)


@dataclass(frozen=True)
class Layout:
    """Where each segment lives in the sequence, for ``n_image`` image tokens and ``codebook`` codes."""

    n_image: int = 64
    codebook: int = 256

    @property
    def n_words(self) -> int:
        return len(WORDS)

    @property
    def vocab(self) -> int:
        return self.n_words + self.codebook

    @property
    def prompt(self) -> slice:
        return slice(0, PROMPT_LEN)

    @property
    def in_image(self) -> slice:  # inside <boi> ... <eoi>
        start = PROMPT_LEN + 1
        return slice(start, start + self.n_image)

    @property
    def out_image(self) -> slice:
        start = self.in_image.stop + 2
        return slice(start, start + self.n_image)

    @property
    def text(self) -> slice:
        start = self.out_image.stop + 1
        return slice(start, start + TEXT_LEN)

    @property
    def length(self) -> int:
        return self.text.stop

    @property
    def condition(self) -> slice:
        """Prompt and input image (what condition dropout removes)."""
        return slice(0, self.in_image.stop + 1)

    def skeleton(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, L) all-``<pad>`` sequence with the four image brackets in place and outputs masked."""
        x = torch.full((batch, self.length), PAD, dtype=torch.long, device=device)
        for seg in (self.in_image, self.out_image):
            x[:, seg.start - 1] = BOI
            x[:, seg.stop] = EOI
        x[:, self.in_image] = NOIMG
        x[:, self.out_image] = MASK
        x[:, self.text] = MASK
        return x

    def modality_bias(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(L, V) additive logit bias: 0 where a token may go, -inf elsewhere.

        Text positions may hold any word except the structural specials; image positions
        only image codes. Other positions are never predicted (all allowed, harmless).
        """
        bias = torch.zeros(self.length, self.vocab, device=device)
        bias[self.text, self.n_words:] = float("-inf")
        for tok in (MASK, BOI, EOI, NOIMG):
            bias[self.text, tok] = float("-inf")
        bias[self.out_image, : self.n_words] = float("-inf")
        return bias


class Block(nn.Module):
    """Pre-norm transformer block with full (bidirectional) attention."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)  # (B, T, C) each
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, C/H), no causal mask
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))
        return x + self.drop(self.mlp(self.ln2(x)))


class ParaDiffModel(nn.Module):
    """Token + position embeddings, ``n_layers`` blocks, a head over words and image codes."""

    def __init__(self, cfg: ModelConfig, layout: Layout) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            from paperlab.paradiff.errors import ParadiffConfigError

            raise ParadiffConfigError(f"model.d_model {cfg.d_model} is not divisible by model.n_heads {cfg.n_heads}")
        self.cfg, self.layout = cfg, layout
        self.tok = nn.Embedding(layout.vocab, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(layout.length, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, layout.vocab)
        self.bias: torch.Tensor
        self.register_buffer("bias", layout.modality_bias(), persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, V) logits, restricted to each position's modality."""
        h = self.tok(x) + self.pos  # (B, L, C)
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln(h)).float() + self.bias

    def output_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the outputs' logits: (B, T, n_words) text and (B, N, codebook) image (codes 0..K-1)."""
        h = self.tok(x) + self.pos
        for blk in self.blocks:
            h = blk(h)
        lay = self.layout
        text = self.head(self.ln(h[:, lay.text])).float()[..., : lay.n_words] + self.bias[lay.text, : lay.n_words]
        img = self.head(self.ln(h[:, lay.out_image])).float()[..., lay.n_words:]
        return text, img
