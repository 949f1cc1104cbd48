"""Merge parameters as mergekit's YAML writes them, checked once and resolved per tensor.

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
Values are converted and range-checked by the method's :class:`~paperlab.soup.methods.Param`
(numbers written as strings, such as YAML's ``1e-5``, are read as numbers, as mergekit reads
them); :func:`check_scope` does that for every literal a setting holds, so a config is checked
before any model is opened and a resolved value needs no second check.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from paperlab.soup.errors import MergeConfigError
from paperlab.soup.methods.base import MergeMethod, Param

Setting = Any  # float | int | bool | str | list[float] | list[dict]
Scope = Mapping[str, Setting] | None
Convert = Callable[[Any], Any]

_LAYER = re.compile(r"(^|\.)(layers|h|blocks|layer)\.(\d+)\.")
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


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


def literal(param: Param, value: Any, where: str) -> Any:
    """One literal converted as mergekit's validation converts it, then range-checked.

    Raises:
        MergeConfigError: the value does not fit the parameter.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if param.kind is bool and text in _TRUE | _FALSE:
            value = text in _TRUE
        elif param.kind is not bool:
            with contextlib.suppress(ValueError):
                value = float(text)
    elif param.kind is bool and isinstance(value, int) and value in (0, 1):
        value = bool(value)
    if param.default is None and value is None:
        return None
    return param.check(value, where)


def _cond(entry: Any, where: str) -> tuple[str | None, Setting]:
    if not isinstance(entry, Mapping) or "value" not in entry:
        raise MergeConfigError(f"{where}: each entry of a filter list needs `value:` (and optionally `filter:`)")
    unknown = set(entry) - {"value", "filter", "pattern"}
    if unknown:
        raise MergeConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; use filter and value")
    flt = entry.get("filter", entry.get("pattern"))
    return (None if flt is None else str(flt)), entry["value"]


def evaluate(setting: Setting, tensor_name: str, t: float, convert: Convert, *, where: str = "parameter") -> Any:
    """One setting's value for one tensor (None when no filter matches)."""
    if isinstance(setting, Mapping):
        setting = [setting]
    if _is_scalar(setting):
        return convert(setting)
    if isinstance(setting, list):
        if not setting:
            return None
        if all(_is_scalar(e) for e in setting):
            values = [convert(e) for e in setting]
            if not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in values):
                return values[int(t * (len(values) - 1))]
            scaled = t * (len(values) - 1)
            i0 = int(scaled)
            i1 = min(len(values) - 1, i0 + 1)
            frac = scaled - i0
            return convert((1 - frac) * float(values[i0]) + frac * float(values[i1]))
        for entry in setting:
            flt, value = _cond(entry, where)
            if flt is None or flt == "*" or (tensor_name and flt in tensor_name):
                return evaluate(value, tensor_name, t, convert, where=where)
        return None
    raise MergeConfigError(f"{where}: {setting!r} is not a number, a list of numbers or a list of {{filter, value}}")


def resolve(param: Param, scopes: Iterable[Scope], tensor_name: str, t: float) -> Any:
    """The first value any scope gives ``param`` for this tensor, else its default (which may be
    :data:`~paperlab.soup.methods.REQUIRED`: the caller reports it)."""
    for scope in scopes:
        if scope is not None and param.name in scope:
            v = evaluate(scope[param.name], tensor_name, t, lambda x: literal(param, x, "parameters"),
                         where=f"parameter {param.name!r}")
            if v is not None:
                return v
    return param.default


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


def check_scope(scope: Scope, where: str, method: MergeMethod, *, per_model: bool) -> None:
    """Check every setting of a scope against ``method``'s parameters: names it does not take
    are refused, and every literal is converted and range-checked. Gradients interpolate
    between their ends, so checking the ends checks every tensor.

    Raises:
        MergeConfigError: naming the key, where it was given and the fix.
    """
    if not scope:
        return
    allowed = [p.name for p in method.params if p.per_model or not per_model]
    unknown = sorted(set(scope) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "no parameters"
        raise MergeConfigError(f"unsupported parameter(s) in {where}: {', '.join(unknown)}; "
                               f"method {method.name!r} takes {takes} here")
    for name, setting in scope.items():
        param = method.param(name)
        assert param is not None
        if isinstance(setting, list) and setting and not all(_is_scalar(e) for e in setting):
            for i, e in enumerate(setting):
                _cond(e, f"{where}.{name}[{i}]")
        for v in leaves(setting):
            literal(param, v, where)
