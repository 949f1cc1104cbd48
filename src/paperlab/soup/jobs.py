"""From a validated spec to jobs: which input tensors make each output tensor, with what parameters.

A job is one output tensor: its input tensors (reader index, tensor name) for the non-base
models in order, the base's, and the method's parameters resolved for that tensor (gradients
placed by layer, filters matched on the name, per-model values). With ``models:`` every job
reads the same name from every model; with ``slices:`` output layer ``k`` reads layer
``start + offset`` of each source, and the embeddings come from the first slice's sources and
the final norm and head from the last slice's (mergekit's layout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from paperlab.soup.checkpoint import Checkpoint
from paperlab.soup.config import MergeSpec
from paperlab.soup.errors import CheckpointError, MergeConfigError, WeightsError
from paperlab.soup.methods import MergeMethod, MethodParams
from paperlab.soup.params import Scope, check_scope, layer_of, layer_t, resolve, with_layer

_PRE = ("embed", "wte", "wpe")
_BOOL_OPTIONS = ("filter_wise", "nuslerp_flatten", "nuslerp_row_wise")


@dataclass
class Job:
    """One output tensor and where it comes from."""

    name: str
    inputs: list[tuple[int, str]]
    base: tuple[int, str] | None
    t: float
    scopes: list[list[Scope]]  # per non-base input: its own scopes, first asked first
    shared: list[Scope]  # scopes for shared parameters
    params: MethodParams | None = None


def n_layers_of(ck: Checkpoint) -> int:
    """The number of transformer layers (config, else the highest layer index + 1)."""
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(ck.config.get(key), int):
            return int(ck.config[key])
    idx = [i for i in (layer_of(n) for n in ck.tensors) if i is not None]
    return max(idx) + 1 if idx else 0


def check_parameter_names(method: MergeMethod, spec: MergeSpec) -> None:
    """Refuse parameters the method does not take, wherever they were written.

    Raises:
        MergeConfigError: naming the key, where it is and the parameters the method takes.
    """
    shared = tuple(dict.fromkeys((*method.shared_params, *method.model_params)))
    check_scope(spec.shared_scope(), "parameters", shared)
    for i, m in enumerate(spec.models):
        check_scope(m.parameters, f"models[{i}].parameters", method.model_params)
    for i, sl in enumerate(spec.slices or []):
        check_scope(sl.parameters, f"slices[{i}].parameters", shared)
        for j, src in enumerate(sl.sources):
            check_scope(src.parameters, f"slices[{i}].sources[{j}].parameters", method.model_params)


def _num(v: Any, what: str, job: Job) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise MergeConfigError(f"{what} for tensor {job.name!r} must be a finite number, got {v!r}")
    return float(v)


def resolve_job(method: MergeMethod, job: Job, shape: tuple[int, ...], seed: int) -> MethodParams:
    """The parameters of one job (mergekit's precedence: model, slice, top level, default).

    Raises:
        MergeConfigError / WeightsError: a missing or invalid value, naming the tensor.
    """
    n = len(job.inputs)

    def per_model(key: str, default: Any) -> list[Any]:
        return [resolve(key, scopes, job.inputs[i][1], job.t, default) for i, scopes in enumerate(job.scopes)]

    def shared(key: str, default: Any) -> Any:
        return resolve(key, job.shared, job.name, job.t, default)

    weights: Sequence[float] | None = None
    if method.takes_weights:
        raw = per_model("weight", None)
        if any(w is None for w in raw):
            missing = [str(job.inputs[i][1]) for i, w in enumerate(raw) if w is None]
            raise WeightsError(f"no weight for tensor {missing[0]!r} of model {raw.index(None) + 1}; "
                               f"method {method.name!r} needs a weight for every model (parameters: {{weight: W}})")
        weights = [_num(w, "weight", job) for w in raw]
    normalize = bool(shared("normalize", method.default_normalize))
    resolved = method.resolve(weights, n, normalize=normalize)
    fields: dict[str, Any] = {"weights": resolved, "normalize": normalize, "shape": shape, "key": job.name, "seed": seed}
    if "lambda" in method.shared_params:
        fields["scale"] = _num(shared("lambda", 1.0), "lambda", job)
    if "density" in method.model_params:
        ds = [_num(d, "density", job) for d in per_model("density", 1.0)]
        for d in ds:
            if not 0.0 < d <= 1.0:
                raise MergeConfigError(f"density for tensor {job.name!r} is {d}; it must be in (0, 1]")
        fields["densities"] = tuple(ds)
    if "gamma" in method.model_params:
        fields["gammas"] = tuple(_num(g, "gamma", job) for g in per_model("gamma", 0.01))
        if any(g < 0 for g in fields["gammas"]):
            raise MergeConfigError(f"gamma for tensor {job.name!r} must be >= 0")
    if "epsilon" in method.model_params:
        es = tuple(_num(e, "epsilon", job) for e in per_model("epsilon", 0.15))
        for d, e in zip(fields["densities"], es, strict=True):
            if d < 1 and not (d - e > 0 and d + e < 1):
                raise MergeConfigError(f"della needs 0 < density - epsilon and density + epsilon < 1; tensor "
                                       f"{job.name!r} has density {d} and epsilon {e}: lower epsilon")
        fields["epsilons"] = es
    if "rescale" in method.shared_params:
        r = shared("rescale", None)
        fields["rescale"] = None if r is None else bool(r)
    if "t" in method.shared_params:
        t = shared("t", None)
        if t is None:
            raise MergeConfigError(f"method {method.name!r} needs `t` (0: the base model, 1: the other) for tensor "
                                   f"{job.name!r}; add parameters: {{t: 0.5}}")
        fields["t"] = _num(t, "t", job)
        if not 0.0 <= fields["t"] <= 1.0:
            raise MergeConfigError(f"t for tensor {job.name!r} is {fields['t']}; it must be in [0, 1]")
    if "scale" in method.shared_params:  # passthrough's per-model scale
        s = per_model("scale", None)[0]
        if s is None:
            s = shared("scale", None)
        fields["scale"] = 1.0 if s is None else _num(s, "scale", job)
    opts = tuple((k, bool(shared(k, None))) for k in _BOOL_OPTIONS if k in method.shared_params
                 and shared(k, None) is not None)
    fields["options"] = opts
    return MethodParams(**fields)


def model_jobs(names: Sequence[str], models: Sequence[Checkpoint], base_index: int | None,
               spec: MergeSpec, model_entries: Sequence[Any]) -> list[Job]:
    """Jobs for ``models:``: every tensor name from every model (and the base)."""
    n_layers = n_layers_of(models[0])
    shared_scope = spec.shared_scope()
    jobs = []
    for name in names:
        scopes: list[list[Scope]] = []
        for e in model_entries:
            own = dict(e.parameters)
            if e.weight is not None:
                own.setdefault("weight", e.weight)
            scopes.append([own, shared_scope])
        jobs.append(Job(name, [(i, name) for i in range(len(models))],
                        None if base_index is None else (base_index, name),
                        layer_t(layer_of(name), n_layers), scopes, [shared_scope]))
    return jobs


@dataclass
class SlicePlan:
    """Jobs for ``slices:`` and what the output config must say."""

    readers: list[Checkpoint]
    jobs: list[Job]
    n_layers: int
    layer_sources: list[tuple[int, int]]  # per output layer: (reader index, input layer), for layer_types


def _slice_job(out_name: str, names: list[str], t: float, *, idx: list[int], non_base: list[int],
               base_pos: int | None, scopes: list[list[Scope]], shared: list[Scope]) -> Job:
    return Job(out_name, [(idx[j], names[j]) for j in non_base],
               None if base_pos is None else (idx[base_pos], names[base_pos]), t, scopes, shared)


def slice_jobs(spec: MergeSpec, method: MergeMethod, open_ck: Any) -> SlicePlan:
    """Plan a ``slices:`` merge (mergekit's layout; see the module docstring).

    Raises:
        MergeConfigError / CheckpointError: bad ranges, a base not among a slice's sources,
            layer counts that differ within a slice, or tensors missing or mis-shaped.
    """
    assert spec.slices
    paths: list[str] = []
    readers: list[Checkpoint] = []

    def reader(path: str) -> int:
        key = str(Path(path).resolve())
        if key not in paths:
            paths.append(key)
            readers.append(open_ck(path))
        return paths.index(key)

    shared_top = spec.shared_scope()
    jobs: list[Job] = []
    layer_sources: list[tuple[int, int]] = []
    out_layer = 0
    post: list[Job] = []
    for si, sl in enumerate(spec.slices):
        idx = [reader(s.model) for s in sl.sources]
        lengths = {s.layer_range[1] - s.layer_range[0] for s in sl.sources}
        if len(lengths) != 1:
            raise MergeConfigError(f"slices[{si}]: every source must cover the same number of layers, got "
                                   f"{sorted(lengths)}")
        for s, r in zip(sl.sources, idx, strict=True):
            if s.layer_range[1] > n_layers_of(readers[r]):
                raise MergeConfigError(f"slices[{si}]: layer_range {list(s.layer_range)} is beyond "
                                       f"{s.model}'s {n_layers_of(readers[r])} layers")
        base_path = sl.base_model or spec.base_model
        base_pos: int | None = None
        if method.needs_base or (method.base_optional and base_path):
            if base_path is None:
                raise WeightsError(f"method {method.name!r} needs a base model; give base_model")
            key = str(Path(base_path).resolve())
            hits = [j for j, r in enumerate(idx) if paths[r] == key]
            if not hits:
                raise MergeConfigError(f"slices[{si}]: the base model {base_path} must be one of the slice's sources")
            base_pos = hits[0]
        non_base = [j for j in range(len(idx)) if j != base_pos]
        count = len(non_base)
        if count < method.min_models or (method.max_models is not None and count > method.max_models):
            want = (f"exactly {method.min_models}" if method.max_models == method.min_models
                    else f"at least {method.min_models}")
            raise MergeConfigError(f"slices[{si}]: method {method.name!r} takes {want} source(s) besides the base, "
                                   f"got {count}")
        shared: list[Scope] = [sl.parameters, shared_top]
        scopes: list[list[Scope]] = [[sl.sources[j].parameters, *shared] for j in non_base]
        first, length = readers[idx[non_base[0]]], next(iter(lengths))

        job = partial(_slice_job, idx=idx, non_base=non_base, base_pos=base_pos, scopes=scopes, shared=shared)

        outside = [n for n in first.tensors if layer_of(n) is None]
        if si == 0:
            jobs += [job(n, [n] * len(idx), 0.0) for n in outside if any(p in n for p in _PRE)]
        if si == len(spec.slices) - 1:
            post = [job(n, [n] * len(idx), 0.0) for n in outside if not any(p in n for p in _PRE)]
        for off in range(length):
            src_layer = sl.sources[non_base[0]].layer_range[0] + off
            names = sorted(n for n in first.tensors if layer_of(n) == src_layer)
            t = layer_t(off, length)
            for n in names:
                ins = [with_layer(n, sl.sources[j].layer_range[0] + off) for j in range(len(idx))]
                jobs.append(job(with_layer(n, out_layer), ins, t))
            layer_sources.append((idx[non_base[0]], src_layer))
            out_layer += 1
    jobs += post
    for jb in jobs:
        pairs = [*jb.inputs, *([jb.base] if jb.base else [])]
        ref = readers[pairs[0][0]].tensors.get(pairs[0][1])
        for r, n in pairs:
            info = readers[r].tensors.get(n)
            if info is None:
                raise CheckpointError(f"tensor {n!r} is missing from {readers[r].path}; the slice's models differ")
            if ref is None or info.shape != ref.shape:
                raise CheckpointError(f"shape mismatch for tensor {n!r} in {readers[r].path}; the slice's models differ")
    return SlicePlan(readers, jobs, out_layer, layer_sources)


