"""``model+adapter``: a PEFT LoRA adapter applied to a model's tensors as they are read.

An adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` (PEFT's
format). For every adapted module the merged weight is ``W + scale * B @ A`` (transposed for
embeddings and ``fan_in_fan_out`` layers), with ``scale = lora_alpha / r``, or
``lora_alpha / sqrt(r)`` with ``use_rslora``, and per-module ``alpha_pattern`` overrides.
This is what ``peft``'s ``merge_and_unload`` computes, which mergekit runs before merging: the
delta is computed in float32, cast to the adapter's dtype, and added to the weight in the
weight's dtype. Full replacement tensors (``modules_to_save``) replace the model's.

Rows of the delta are computed for the piece being read only, so applying an adapter costs no
more memory than reading the tensor. An adapter for another base (a module the model does not
have, or shapes that do not fit) is refused before any tensor data is read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperlab.soup.checkpoint import Checkpoint, read_safetensors_header
from paperlab.soup.errors import CheckpointError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_LORA = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\.[^.]+)?(\.weight)?$")


@dataclass
class LoraDelta:
    """One adapted tensor: the low-rank factors and how they combine."""

    a: Any  # (r, in), or (r, vocab) for an embedding
    b: Any  # (out, r), or (dim, r) for an embedding
    scale: float
    transposed: bool  # the delta is (B @ A).T (embeddings, fan_in_fan_out)


@dataclass
class Adapter:
    """A loaded adapter: deltas and replacements keyed by the model's tensor names."""

    path: Path
    deltas: dict[str, LoraDelta] = field(default_factory=dict)
    replace: dict[str, Any] = field(default_factory=dict)


def _load_config(path: Path) -> dict[str, Any]:
    cfg_file = path / CONFIG
    if not cfg_file.is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"LoRA adapter {path} needs {CONFIG} and {WEIGHTS} (PEFT's format); check the path")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({exc})") from None
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise CheckpointError(f"{path} is a {cfg.get('peft_type')} adapter; only LoRA adapters can be applied")
    if cfg.get("use_dora"):
        raise CheckpointError(f"{path} is a DoRA adapter; merge it with peft's merge_and_unload first")
    return cfg


def _pattern_value(patterns: dict[str, Any] | None, module: str, default: Any) -> Any:
    # PEFT matches a pattern key against the end of the module's dotted name.
    for key, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


def load_adapter(path: Path) -> Adapter:
    """Read an adapter's config and tensors (adapters are small: they are loaded whole).

    Raises:
        CheckpointError: not a PEFT LoRA adapter, or one whose factors do not pair up.
    """
    from safetensors.torch import load_file

    cfg = _load_config(path)
    read_safetensors_header(path / WEIGHTS)  # a truncated file is named before it is loaded
    raw = load_file(str(path / WEIGHTS))
    alpha, rslora, fan = float(cfg.get("lora_alpha", 8)), bool(cfg.get("use_rslora")), bool(cfg.get("fan_in_fan_out"))
    pairs: dict[str, dict[str, Any]] = {}
    out = Adapter(path)
    for key, tensor in raw.items():
        name = key.removeprefix(_PREFIX)
        m = _LORA.match(name)
        if m is None:
            out.replace[name] = tensor  # modules_to_save: a full tensor under the model's own name
            continue
        pairs.setdefault(m.group("module"), {})[m.group("kind")] = tensor
    for module, p in pairs.items():
        embed = "lora_embedding_A" in p or "lora_embedding_B" in p
        a, b = (p.get("lora_embedding_A"), p.get("lora_embedding_B")) if embed else (p.get("lora_A"), p.get("lora_B"))
        if a is None or b is None or a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{path}: the LoRA factors of {module} do not pair up (A {list(getattr(a, 'shape', []))}, "
                                  f"B {list(getattr(b, 'shape', []))}); re-save the adapter")
        r = a.shape[0]
        a_alpha = float(_pattern_value(cfg.get("alpha_pattern"), module, alpha))
        scale = a_alpha / math.sqrt(r) if rslora else a_alpha / r
        out.deltas[f"{module}.weight"] = LoraDelta(a, b, scale, transposed=embed or fan)
    return out


class LoraCheckpoint(Checkpoint):
    """A checkpoint whose reads return the adapted weights (see the module docstring)."""

    adapter: Adapter

    @classmethod
    def wrap(cls, ck: Checkpoint, adapter: Adapter, label: str) -> LoraCheckpoint:
        """``ck`` with ``adapter`` applied; checks that the adapter fits the model.

        Raises:
            CheckpointError: a tensor the model lacks, or a shape that does not fit.
        """
        new = cls(ck.path, ck.config, ck.tensors, ck.pickled, ref=label)
        new.adapter = adapter
        for name, d in adapter.deltas.items():
            info = ck.tensors.get(name)
            rows, cols = (d.a.shape[1], d.b.shape[0]) if d.transposed else (d.b.shape[0], d.a.shape[1])
            if info is None:
                raise CheckpointError(f"LoRA adapter {adapter.path} adapts {name}, which {label} does not have; "
                                      "the adapter was made for another base model")
            if tuple(info.shape) != (rows, cols):
                raise CheckpointError(f"LoRA adapter {adapter.path} does not fit {label}: {name} is {list(info.shape)} "
                                      f"but the adapter's update is [{rows}, {cols}]; the adapter was made for another "
                                      "base model")
        for name, t in adapter.replace.items():
            info = ck.tensors.get(name)
            if info is None or tuple(info.shape) != tuple(t.shape):
                raise CheckpointError(f"LoRA adapter {adapter.path} replaces {name} with a {list(t.shape)} tensor, which "
                                      f"does not fit {label}; the adapter was made for another base model")
        return new

    def read(self, name: str, start: int = 0, stop: int | None = None, out: Any = None) -> Any:
        import torch

        if name in self.adapter.replace:
            flat = self.adapter.replace[name].reshape(-1)
            info = self.tensors[name]
            stop = info.numel if stop is None else stop
            return flat[start:stop].to(getattr(torch, info.dtype), copy=True)
        piece = super().read(name, start, stop, out)
        d = self.adapter.deltas.get(name)
        if d is None:
            return piece
        cols = self.tensors[name].shape[1]
        stop = self.tensors[name].numel if stop is None else stop
        r0, r1 = start // cols, -(-stop // cols)
        # Only the rows this piece touches: (B @ A)[r0:r1], or columns r0:r1 of B @ A, transposed.
        if d.transposed:
            rows = (d.b.float() @ d.a[:, r0:r1].float()).T
        else:
            rows = d.b[r0:r1].float() @ d.a.float()
        delta = rows.mul_(d.scale).reshape(-1)[start - r0 * cols: stop - r0 * cols]
        if d.a.dtype in (torch.float16, torch.bfloat16):
            delta = delta.to(d.a.dtype)  # peft casts the float32 update back to the adapter's dtype
        piece.copy_(piece.float().add_(delta.float()))
        return piece


def open_located(loc: Any, *, allow_pickle: bool = False) -> Checkpoint:
    """Open a located reference (:class:`paperlab.soup.refs.Located`), its adapter applied.

    Raises:
        CheckpointError: the model or the adapter cannot be read, or the adapter does not fit.
    """
    from paperlab.soup.checkpoint import open_checkpoint

    ck = open_checkpoint(loc.model, allow_pickle=allow_pickle)
    if loc.ref != str(loc.model):
        ck.ref = loc.ref
    if loc.lora is None:
        return ck
    return LoraCheckpoint.wrap(ck, load_adapter(loc.lora), loc.ref)
