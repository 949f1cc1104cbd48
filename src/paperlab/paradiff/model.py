"""The joint model: one bidirectional transformer over text words and image codes.

Sequence layout (fixed length, so learned positions also tell the modality apart)::

    [prompt words, padded] [<boi> input image codes <eoi>] [<boi> output image <eoi>] [output text]

Image code ``k`` has token id ``len(WORDS) + k`` (codes after the text vocabulary); ``<mask>``
is the one mask token. Generation prompts have no input image: its slots hold ``<noimg>``.
Dropping the condition (for classifier-free guidance) blanks the prompt to ``<pad>`` and the
input image to ``<noimg>``. Logits are restricted per position to its modality (words at text
positions, codes at image positions), the same at training and sampling.

Attention (``ModelConfig.attention``): ``full`` is the published layout, every token attends to
every token. ``prefix`` (the presets' choice) is the same except that condition tokens (prompt
and input image) attend only to the condition, so their keys and values do not depend on the
outputs being decoded. A sampler then computes them once per decode (:meth:`ParaDiffModel.condition_cache`)
and each step runs the blocks over the 34 output tokens only, instead of all 86: the condition is
most of the sequence, and the unconditional rows of guidance all share one blank condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from paperlab.paradiff.config import ModelConfig
from paperlab.paradiff.task import PROMPT_LEN, SPECIALS, TEXT_LEN, WORDS
from paperlab.train.seeds import RowDropout

__all__ = ["BOI", "EOI", "EOS", "KV", "MASK", "ConditionCache", "NOIMG", "PAD", "Layout", "ParaDiffModel"]

# Per layer, key and value buffers (B, heads, L, head dim) whose condition positions are cached.
KV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ConditionCache:
    """What a decode computes once from its condition rows (prefix attention only): per layer
    the key and value buffers (:data:`KV`), the position part of the embeddings (L, C) and the
    input image's skip into the output image's slots (B, N, C). Neither depends on the outputs
    being decoded; recomputing them every step was 9% of a batch-1 model call."""

    kv: KV
    positions: torch.Tensor
    skip: torch.Tensor

    def rows(self, rows: slice) -> ConditionCache:
        return ConditionCache([(k[rows], v[rows]) for k, v in self.kv], self.positions, self.skip[rows])

    def expand(self, b: int) -> ConditionCache:
        """This one-row cache for ``b`` rows, each with its own buffers (calls write into them)."""
        return ConditionCache([(k.expand(b, -1, -1, -1).contiguous(), v.expand(b, -1, -1, -1).contiguous())
                               for k, v in self.kv], self.positions, self.skip.expand(b, -1, -1).contiguous())

    def cat(self, other: ConditionCache) -> ConditionCache:
        """The rows of ``self`` then those of ``other``, in new buffers."""
        return ConditionCache([(torch.cat([k, ok]), torch.cat([v, ov]))
                               for (k, v), (ok, ov) in zip(self.kv, other.kv, strict=True)],
                              self.positions, torch.cat([self.skip, other.skip]))

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
        """Prompt and input image with its brackets (what condition dropout removes)."""
        return slice(0, self.in_image.stop + 1)

    def prefix_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(L, L) bool, True where a query may attend a key: the condition sees only itself."""
        in_cond = torch.zeros(self.length, dtype=torch.bool, device=device)
        in_cond[self.condition] = True
        return ~(in_cond[:, None] & ~in_cond[None, :])

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
        self.drop = RowDropout(cfg.dropout)  # per-sample masks under training (paperlab.train.seeds)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                keep: slice | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Returns the new hidden states and this block's own keys and values.

        ``mask``: (T, T) bool, True = may attend (None: all). ``kv``: key and value buffers
        (B, H, P + T, C/H) whose first P positions hold cached keys and values of tokens before
        ``x`` (the condition, for a sampler); this block writes its own into the last T and
        attends over all. Writing in place spares a concatenation per layer and step.
        ``keep``: return only these positions of ``x`` (every token still serves as a key);
        the last block of a sampler's step skips the tokens whose logits it does not need.
        """
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)  # (B, T, C) each
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        own = (k, v)
        if kv is not None:
            kv[0][:, :, -t:] = k
            kv[1][:, :, -t:] = v
            k, v = kv
        if keep is not None:
            q, x = q[:, :, keep], x[:, keep]
            mask = None if mask is None else mask[keep]
            t = x.shape[1]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, C/H), no causal mask
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))
        return x + self.drop(self.mlp(self.ln2(x))), own


class ParaDiffModel(nn.Module):
    """Token + position embeddings, ``n_layers`` blocks, a head over words and image codes."""

    _no_split_modules = ["Block"]  # the units FSDP shards one by one (paperlab.train.parallel)

    def __init__(self, cfg: ModelConfig, layout: Layout) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            from paperlab.paradiff.errors import ParadiffConfigError

            raise ParadiffConfigError(f"model.d_model {cfg.d_model} is not divisible by model.n_heads {cfg.n_heads}")
        self.cfg, self.layout = cfg, layout
        self.tok = nn.Embedding(layout.vocab, cfg.d_model)
        # Positions: one embedding per sequence slot, plus one per image cell shared by the input
        # and the output image (so "the same place in both images" is known from the start),
        # plus one per segment.
        self.pos = nn.Parameter(torch.randn(layout.length, cfg.d_model) * 0.02)
        self.cell_pos = nn.Parameter(torch.randn(layout.n_image, cfg.d_model) * 0.02)
        self.seg = nn.Embedding(4, cfg.d_model)
        self.in_skip = nn.Linear(cfg.d_model, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, layout.vocab)
        self.bias: torch.Tensor
        self.register_buffer("bias", layout.modality_bias(), persistent=False)
        seg = torch.zeros(layout.length, dtype=torch.long)
        seg[layout.in_image.start - 1: layout.in_image.stop + 1] = 1
        seg[layout.out_image.start - 1: layout.out_image.stop + 1] = 2
        seg[layout.text] = 3
        self.segments: torch.Tensor
        self.register_buffer("segments", seg, persistent=False)
        self.attn_mask: torch.Tensor | None
        self.register_buffer("attn_mask", layout.prefix_mask() if cfg.attention == "prefix" else None,
                             persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def _positions(self) -> torch.Tensor:
        """(L, C): the position part of every slot's embedding (slot, segment, image cell)."""
        lay = self.layout
        pos = self.pos + self.seg(self.segments)  # (L, C)
        cells = torch.zeros_like(pos)
        cells[lay.in_image] = self.cell_pos
        cells[lay.out_image] = self.cell_pos
        return pos + cells

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C): each output-image slot also sees the input image's token at the same
        cell, the way image editors feed the source image alongside the noisy target
        (channel-wise in InstructPix2Pix); without it this small model did not learn even to
        copy a cell in the training budget. Generation rows hold <noimg> there, learned like
        any token."""
        return self.in_skip(self.tok(x[:, self.layout.in_image]))

    def _embed(self, x: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None,
               skip: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L - start, C) embeddings of positions ``start`` onwards (``x`` is the whole (B, L)).
        ``positions`` and ``skip``: :meth:`_positions` and :meth:`_skip` computed before (the
        same values, the same arithmetic after)."""
        lay = self.layout
        positions = self._positions() if positions is None else positions
        h = self.tok(x[:, start:]) + positions[start:]  # (B, L - start, C)
        skip = self._skip(x) if skip is None else skip
        o0, o1 = lay.out_image.start - start, lay.out_image.stop - start
        return torch.cat([h[:, :o0], h[:, o0:o1] + skip, h[:, o1:]], 1)

    def forward(self, x: torch.Tensor, outputs: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, L) token ids -> (B, L, V) logits, restricted to each position's modality.

        ``outputs=True``: :meth:`output_logits` instead (a training step that needs only the
        outputs' logits still goes through ``forward``, where DDP and FSDP hook in).
        """
        if outputs:
            return self.output_logits(x)
        h = self._embed(x)
        for blk in self.blocks:
            h = blk(h, self.attn_mask)[0]
        return self.head(self.ln(h)).float() + self.bias

    @property
    def cacheable(self) -> bool:
        """Whether the condition's keys and values can be computed once per decode."""
        return self.attn_mask is not None

    def condition_cache(self, x: torch.Tensor) -> ConditionCache:
        """What :meth:`output_logits` reuses for the rows ``x`` (B, L): per layer, key and value
        buffers (B, H, L, C/H), whose condition positions hold the condition's keys and values
        and whose output positions are scratch that each call overwrites; and the embeddings'
        parts that do not depend on the outputs (prefix attention only).
        """
        if not self.cacheable:
            raise ValueError("condition_cache needs model.attention 'prefix'")
        lay = self.layout
        c = lay.condition.stop
        positions, skip = self._positions(), self._skip(x)
        h = self._embed(x, 0, positions, skip)[:, :c]
        kv: KV = []
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            # The last block's outputs at the condition are never read, only its keys and values.
            h, (k, v) = blk(h, keep=slice(0, 0) if i == last else None)
            size = (k.shape[0], k.shape[1], lay.length, k.shape[3])
            kb, vb = k.new_zeros(size), v.new_zeros(size)
            kb[:, :, :c], vb[:, :, :c] = k, v
            kv.append((kb, vb))
        return ConditionCache(kv, positions, skip)

    def output_logits(self, x: torch.Tensor, cache: ConditionCache | None = None, *, text: bool = True,
                      image: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the outputs' logits: (B, T, n_words) text and (B, N, codebook) image (codes 0..K-1).

        With ``cache`` (from :meth:`condition_cache` of the same condition rows) the blocks run
        over the output tokens only; the result equals the uncached one up to float rounding.
        ``text=False`` or ``image=False`` skips that modality (its logits come back with length
        0): the last block then computes only the other one's positions.
        """
        lay = self.layout
        if not (text or image):
            raise ValueError("output_logits needs text, image or both")
        start = 0 if cache is None else lay.condition.stop
        want = slice(lay.out_image.start if image else lay.text.start, lay.text.stop if text else lay.out_image.stop)
        keep = slice(want.start - start, want.stop - start)
        h = self._embed(x, start) if cache is None else self._embed(x, start, cache.positions, cache.skip)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            k = keep if i == last else None
            h = blk(h, kv=cache.kv[i], keep=k)[0] if cache is not None else blk(h, self.attn_mask, keep=k)[0]
        w, bias, nw = self.head.weight, self.head.bias, lay.n_words
        b = x.shape[0]
        # Each modality's slice of the head only: the other columns would be -inf anyway.
        if text:
            t = F.linear(self.ln(h[:, lay.text.start - want.start: lay.text.stop - want.start]), w[:nw], bias[:nw])
            text_logits = t.float() + self.bias[lay.text, :nw]
        else:
            text_logits = h.new_zeros((b, 0, nw), dtype=torch.float32)
        if image:
            o = slice(lay.out_image.start - want.start, lay.out_image.stop - want.start)
            img_logits = F.linear(self.ln(h[:, o]), w[nw:], bias[nw:]).float()
        else:
            img_logits = h.new_zeros((b, 0, lay.codebook), dtype=torch.float32)
        return text_logits, img_logits
