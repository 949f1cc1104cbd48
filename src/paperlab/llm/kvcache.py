"""Next-token distributions on a local transformers model, over a cache of prompt prefixes.

:class:`PrefixCache` keeps the key/value tensors of token sequences the model has run, keyed by
their token ids, and finds for a new sequence the stored one sharing the longest prefix with
it; only the rest goes through the model. :func:`forward_rows` runs many rows at once: each
row's reusable past is left-padded to a common length, its new tokens right-padded, and the
attention mask and position ids say what is real, so rows with different cached lengths share
one forward pass. Rows of one call that share a long prefix (a query's groups, the k-shot
prefix of a prompt set) get it computed once, as its own entry, before the rows run.

It needs plain per-layer caches (``DynamicLayer``: full attention, as in Llama, Qwen,
SmolLM2); for other cache kinds (sliding windows, linear attention) nothing is stored and every
call runs its rows whole, which gives the same numbers, only slower.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from paperlab.llm.types import NextTokens, TokenDist

#: a shared prefix must save at least this many tokens per row to be run on its own first
_MIN_SHARED = 16


@dataclass
class _Entry:
    ids: list[int]
    kv: list[tuple[Any, Any]]  # per layer (keys, values), each (heads, tokens, dim): views
    storage: int  # id of the batch tensor the views point into (memory is counted per storage)
    nbytes: int


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists (list slices compare in C)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class PrefixCache:
    """Key/value caches of earlier token sequences, least recently used dropped first.

    Args:
        max_bytes: memory the stored tensors may hold; entries that are views into one batch
            tensor count that tensor once.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next = 0
        #: tokens served from the cache and tokens run, over the cache's life (statistics)
        self.hit_tokens = 0
        self.run_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def lookup(self, ids: Sequence[int], limit: int) -> tuple[_Entry | None, int]:
        """The entry sharing the longest prefix with ``ids`` (at most ``limit`` tokens used)."""
        best: tuple[_Entry | None, int] = (None, 0)
        best_key = None
        for key, e in self._entries.items():
            n = min(common_prefix(e.ids, ids), limit)
            if n > best[1]:
                best, best_key = (e, n), key
        if best_key is not None:
            self._entries.move_to_end(best_key)
        return best

    def add(self, ids: list[int], kv: list[tuple[Any, Any]], storage: int, nbytes: int) -> None:
        # An entry that the new one extends holds nothing the new one lacks: drop it.
        for key in [k for k, e in self._entries.items()
                    if len(e.ids) <= len(ids) and ids[: len(e.ids)] == e.ids]:
            del self._entries[key]
        self._entries[self._next] = _Entry(ids, kv, storage, nbytes)
        self._next += 1
        while len(self._entries) > 1 and self._bytes() > self.max_bytes:
            self._entries.popitem(last=False)

    def _bytes(self) -> int:
        return sum({e.storage: e.nbytes for e in self._entries.values()}.values())


@dataclass
class Row:
    """One request: the prompt's token ids, then the forced tokens."""

    prompt: list[int]
    forced: list[int]

    @property
    def ids(self) -> list[int]:
        return self.prompt + self.forced


def _cache_kwarg(model: Any) -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache``; models written against
    older releases (remote or registered code) still take the old name."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _plain_layers(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer

    layers: Any = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def forward_rows(model: Any, rows: Sequence[Row], candidates: Sequence[int], store: PrefixCache,
                 pad_id: int) -> list[NextTokens]:
    """Distributions after each row's prompt and after each of its forced tokens.

    Call under ``torch.inference_mode()`` and the backend's lock.
    """
    if not rows:
        return []
    # Rows sharing a long prefix that the cache lacks: run that prefix once, as its own entry.
    shared = min(len(r.prompt) - 1 for r in rows)
    for r in rows[1:]:
        shared = min(shared, common_prefix(rows[0].ids, r.ids))
    if len(rows) > 1 and shared >= _MIN_SHARED:
        _, have = store.lookup(rows[0].ids, shared)
        if shared - have >= _MIN_SHARED:
            _run(model, [Row(rows[0].ids[: shared + 1], [])], [], store, pad_id, keep_logits=False)
    return _run(model, rows, candidates, store, pad_id, keep_logits=True)


def _run(model: Any, rows: Sequence[Row], candidates: Sequence[int], store: PrefixCache,
         pad_id: int, keep_logits: bool) -> list[NextTokens]:
    import torch
    from transformers import DynamicCache

    dev = model.device
    # Reuse at most up to the token before the first position whose logits we need.
    found = [store.lookup(r.ids, len(r.prompt) - 1) for r in rows]
    past_len = [n for _, n in found]
    new = [r.ids[n:] for r, n in zip(rows, past_len, strict=True)]
    p_max, n_max = max(past_len), max(len(x) for x in new)
    b = len(rows)
    cache = DynamicCache(config=model.config)
    if p_max:
        layers = len(next(e for e, _ in found if e is not None).kv)
        for li in range(layers):
            ks: list[Any] = []
            vs: list[Any] = []
            for (e, n) in found:
                if e is None or n == 0:
                    k0 = v0 = None
                else:
                    k0, v0 = e.kv[li][0][:, :n], e.kv[li][1][:, :n]
                ks.append(k0)
                vs.append(v0)
            ref_k = next(k for k in ks if k is not None)
            ref_v = next(v for v in vs if v is not None)
            keys = ref_k.new_zeros((b, ref_k.shape[0], p_max, ref_k.shape[2]))
            values = ref_v.new_zeros((b, ref_v.shape[0], p_max, ref_v.shape[2]))
            for i, (k0, v0) in enumerate(zip(ks, vs, strict=True)):
                if k0 is not None:
                    keys[i, :, p_max - k0.shape[1]:] = k0
                    values[i, :, p_max - v0.shape[1]:] = v0
            cache.update(keys, values, li)
    input_ids = torch.full((b, n_max), pad_id, dtype=torch.long)
    mask = torch.zeros((b, p_max + n_max), dtype=torch.long)
    pos = torch.zeros((b, n_max), dtype=torch.long)
    for i, (x, p) in enumerate(zip(new, past_len, strict=True)):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, p_max - p : p_max + len(x)] = 1
        pos[i] = torch.arange(p, p + n_max)
    # The logits needed: the last len(forced) + 1 real positions of every row.
    first = [len(x) - 1 - len(r.forced) for x, r in zip(new, rows, strict=True)]
    keep = max(n_max - f for f in first) if keep_logits else 1
    out = model(input_ids=input_ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                use_cache=True, logits_to_keep=keep, **{_cache_kwarg(model): cache})
    store.hit_tokens += sum(past_len)
    store.run_tokens += sum(len(x) for x in new)
    kv_out: Any = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if _plain_layers(kv_out):
        layer_kv = [(layer.keys, layer.values) for layer in kv_out.layers]
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layer_kv)
        storage = id(layer_kv[0][0])
        for i, (r, x, p) in enumerate(zip(rows, new, past_len, strict=True)):
            lo, hi = p_max - p, p_max + len(x)
            store.add(r.ids, [(k[i, :, lo:hi], v[i, :, lo:hi]) for k, v in layer_kv], storage, nbytes)
    if not keep_logits:
        return []
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # (b, keep, vocab)
    cand = torch.tensor(list(candidates), device=logp.device)
    results = []
    for i, (x, f, r) in enumerate(zip(new, first, rows, strict=True)):
        cols = range(keep - (n_max - f), keep - (n_max - len(x)) )
        dists = []
        for c in cols:
            row = logp[i, c]
            top_lp, top_id = row.max(-1)
            hits = (cand == top_id).nonzero()
            dists.append(TokenDist(row[cand].tolist(), int(hits[0, 0]) if len(hits) else None,
                                   float(top_lp)))
        results.append(NextTokens(dists, len(r.prompt), len(x)))
    return results
