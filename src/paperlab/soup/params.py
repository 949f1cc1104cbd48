"""Merge parameters as mergekit's YAML writes them, resolved per tensor.

A parameter setting is one of
- a scalar (``weight: 0.5``): the same value for every tensor;
- a list of numbers (``density: [1, 0.7, 0.1]``): a gradient over the layers. A tensor of
  layer ``i`` of ``L`` sits at ``t = i / (L - 1)`` (``t = 1`` for a 1-layer slice; tensors
  outside the layers, such as embeddings, the final norm and the head, sit at ``t = 0``), and its
  value is interpolated linearly between the two list entries around ``t * (len - 1)``;
- a list of ``{filter: SUBSTRING, value: SETTING}`` mappings: the first whose filter occurs in
  the tensor name (no filter, or ``*``, matches every tensor) gives the value; when none
  matches, the next scope is asked. ``pattern:`` is read as an older spelling of ``filter:``.

Scopes, from first asked to last: the model's own ``parameters`` (per model), the slice's,
then the top-level ``parameters``; a method's default comes last. These are mergekit's rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from paperlab.soup.errors import MergeConfigError

Setting = Any  # float | int | bool | str | list[float] | list[dict]
Scope = Mapping[str, Setting] | None

_LAYER = re.compile(r"(^|\.)(layers|h|blocks|layer)\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """The layer index of a tensor name (``model.layers.3.mlp...`` -> 3), or None outside layers."""
    m = _LAYER.search(name)
    return int(m.group(3)) if m else None


def with_layer(name: str, index: int) -> str:
    """``name`` with its layer index replaced by ``index``."""
    return _LAYER.sub(lambda m: f"{m.group(1)}{m.group(2)}.{index}.", name, count=1)


def layer_t(index: int | None, n_layers: int) -> float:
    """mergekit's interpolation position: i / (L - 1) inside the layers, 0 outside them."""
    if index is None:
        return 0.0
    return index / (n_layers - 1) if n_layers > 1 else 1.0


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (int, float, bool, str))


def _cond(entry: Any, where: str) -> tuple[str | None, Setting]:
    if not isinstance(entry, Mapping) or "value" not in entry:
        raise MergeConfigError(f"{where}: each entry of a filter list needs `value:` (and optionally `filter:`)")
    unknown = set(entry) - {"value", "filter", "pattern"}
    if unknown:
        raise MergeConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; use filter and value")
    flt = entry.get("filter", entry.get("pattern"))
    return (None if flt is None else str(flt)), entry["value"]


def evaluate(setting: Setting, tensor_name: str, t: float, *, where: str = "parameter") -> Any:
    """One setting's value for one tensor (None when no filter matches)."""
    if isinstance(setting, Mapping):
        setting = [setting]
    if _is_scalar(setting):
        return setting
    if isinstance(setting, list):
        if not setting:
            return None
        if all(_is_scalar(e) for e in setting):
            nums = all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in setting)
            if not nums:
                return setting[int(t * (len(setting) - 1))]
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * float(setting[i0]) + frac * float(setting[i1])
        for entry in setting:
            flt, value = _cond(entry, where)
            if flt is None or flt == "*" or (tensor_name and flt in tensor_name):
                return evaluate(value, tensor_name, t, where=where)
        return None
    raise MergeConfigError(f"{where}: {setting!r} is not a number, a list of numbers or a list of {{filter, value}}")


def resolve(name: str, scopes: Iterable[Scope], tensor_name: str, t: float, default: Any) -> Any:
    """The first value any scope gives ``name`` for this tensor, else ``default``."""
    for scope in scopes:
        if scope is not None and name in scope:
            v = evaluate(scope[name], tensor_name, t, where=f"parameter {name!r}")
            if v is not None:
                return v
    return default


def leaves(setting: Setting) -> list[Any]:
    """Every literal value a setting can produce (the ends of gradients, every filter's value)."""
    if isinstance(setting, Mapping):
        setting = [setting]
    if _is_scalar(setting) or setting is None:
        return [setting]
    out: list[Any] = []
    if isinstance(setting, list):
        for e in setting:
            out.extend(leaves(e["value"]) if isinstance(e, Mapping) and "value" in e else leaves(e))
        return out
    return [setting]


def check_setting(name: str, setting: Setting, where: str) -> None:
    """Refuse values no tensor could use: NaN/inf, densities outside (0, 1], negative gamma/epsilon.

    Gradients interpolate between their ends, so checking the ends checks every tensor.

    Raises:
        MergeConfigError: naming the key, where it was given and the fix.
    """
    if isinstance(setting, list) and setting and not all(_is_scalar(e) for e in setting):
        for i, e in enumerate(setting):
            _cond(e, f"{where}.{name}[{i}]")
    for v in leaves(setting):
        if name in ("normalize", "int8_mask", "rescale", "filter_wise", "nuslerp_flatten", "nuslerp_row_wise"):
            if not isinstance(v, bool):
                raise MergeConfigError(f"{where}.{name} must be true or false, got {v!r}")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MergeConfigError(f"{where}.{name} must be a number, got {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise MergeConfigError(f"{where}.{name} must be a finite number, got {v!r}")
        if name == "density" and not 0.0 < f <= 1.0:
            raise MergeConfigError(f"{where}.density must be in (0, 1], got {v!r}; 1 keeps every entry")
        if name in ("gamma", "epsilon") and f < 0:
            raise MergeConfigError(f"{where}.{name} must be >= 0, got {v!r}")
        if name == "t" and not 0.0 <= f <= 1.0:
            raise MergeConfigError(f"{where}.t must be in [0, 1], got {v!r}")


def check_scope(scope: Scope, where: str, allowed: Sequence[str]) -> None:
    """Check every setting of a scope, refusing keys the method does not take."""
    if not scope:
        return
    unknown = sorted(set(scope) - set(allowed))
    if unknown:
        raise MergeConfigError(
            f"unsupported parameter(s) in {where}: {', '.join(unknown)}; this method takes {', '.join(allowed)}"
        )
    for k, v in scope.items():
        check_setting(k, v, where)
