"""From a validated spec to jobs: which input tensors make each output tensor, with what parameters.

A job is one output tensor: its input tensors (reader index, tensor name) for the non-base
models in order, the base's, and the method's parameters resolved for that tensor (gradients
placed by layer, filters matched on the name, per-model values, defaults from the method's
declaration). With ``models:`` every job reads the same name from every model; with
``slices:`` output layer ``k`` reads layer ``start + offset`` of each source, and the
embeddings come from the first slice's sources and the final norm and head from the last
slice's (mergekit's layout).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from paperlab.soup.checkpoint import Checkpoint
from paperlab.soup.config import MergeSpec
from paperlab.soup.errors import CheckpointError, MergeConfigError, WeightsError
from paperlab.soup.methods import REQUIRED, MergeMethod, MethodParams
from paperlab.soup.params import Scope, layer_of, layer_t, resolve, with_layer

_PRE = ("embed", "wte", "wpe")


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
    vocab: bool = False  # rows are tokens: re-indexed to the output vocabulary before merging


def n_layers_of(ck: Checkpoint) -> int:
    """The number of transformer layers (config, else the highest layer index + 1)."""
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(ck.config.get(key), int):
            return int(ck.config[key])
    idx = [i for i in (layer_of(n) for n in ck.tensors) if i is not None]
    return max(idx) + 1 if idx else 0


def check_count(method: MergeMethod, count: int, where: str = "") -> None:
    """Refuse a number of (non-base) models the method does not take.

    Raises:
        WeightsError: naming the method and the count it takes.
    """
    if count < method.min_models or (method.max_models is not None and count > method.max_models):
        want = (f"exactly {method.min_models}" if method.max_models == method.min_models
                else f"at least {method.min_models}" if method.max_models is None
                else f"{method.min_models} to {method.max_models}")
        extra = " besides the base" if method.base in ("required", "optional") else ""
        raise WeightsError(f"{where}method {method.name!r} takes {want} model(s){extra}, got {count}")


def resolve_job(method: MergeMethod, job: Job, shape: tuple[int, ...], seed: int, compute: str) -> MethodParams:
    """The parameters of one job (mergekit's precedence: model, slice, top level, default).

    Values were checked when the spec was built; this places them (gradients, filters) and
    reports a required one that no scope gives for this tensor.

    Raises:
        MergeConfigError / WeightsError: a missing value, naming the tensor; weights that do not
            fit the method.
    """
    per_model: dict[str, tuple[Any, ...]] = {}
    shared: dict[str, Any] = {}
    for p in method.params:
        if p.per_model:
            vals = [resolve(p, scopes, job.inputs[i][1], job.t) for i, scopes in enumerate(job.scopes)]
            if any(v is REQUIRED for v in vals):
                i = next(i for i, v in enumerate(vals) if v is REQUIRED)
                raise WeightsError(f"no {p.name} for tensor {job.inputs[i][1]!r} of model {i + 1}; method "
                                   f"{method.name!r} needs a {p.name} for every model (parameters: {{{p.name}: ...}})")
            per_model[p.name] = tuple(vals)
        else:
            v = resolve(p, job.shared, job.name, job.t)
            if v is REQUIRED:
                hint = f" ({p.fix})" if p.fix else ""
                raise MergeConfigError(f"method {method.name!r} needs `{p.name}`{hint} for tensor {job.name!r}; "
                                       f"add parameters: {{{p.name}: ...}}")
            shared[p.name] = v
    weights = per_model.pop("weight", None)
    resolved = method.resolve(weights, len(job.inputs), normalize=bool(shared.get(method.normalize_param, False)))
    method.check_values(shared, per_model, f"tensor {job.name!r}")
    return MethodParams(resolved, shared, per_model, shape, job.name, seed, compute)


def model_jobs(names: Sequence[str], model_readers: Sequence[int], base_reader: int | None, spec: MergeSpec,
               scopes_of: Sequence[dict[str, Any]], n_layers: int) -> list[Job]:
    """Jobs for ``models:``: every tensor name from every model (reader indices in model order)
    and the base."""
    top = spec.parameters
    return [Job(name, [(r, name) for r in model_readers], None if base_reader is None else (base_reader, name),
                layer_t(layer_of(name), n_layers), [[own, top] for own in scopes_of], [top])
            for name in names]


@dataclass
class SlicePlan:
    """Jobs for ``slices:`` and what the output config must say."""

    jobs: list[Job]
    n_layers: int
    layer_sources: list[tuple[int, int]]  # per output layer: (reader index, input layer), for layer_types


def _slice_job(out_name: str, names: list[str], t: float, *, idx: list[int], non_base: list[int],
               base_pos: int | None, scopes: list[list[Scope]], shared: list[Scope]) -> Job:
    return Job(out_name, [(idx[j], names[j]) for j in non_base],
               None if base_pos is None else (idx[base_pos], names[base_pos]), t, scopes, shared)


def slice_jobs(spec: MergeSpec, method: MergeMethod, reader: Callable[[str], int], readers: list[Checkpoint],
               same: Callable[[str, int], bool], reindexed: Callable[[str], bool] = lambda name: False) -> SlicePlan:
    """Plan a ``slices:`` merge (mergekit's layout; see the module docstring).

    Args:
        reader: a model reference -> its reader index (opening it the first time).
        readers: the opened checkpoints, by reader index.
        same: whether a reference names the model at a reader index.
        reindexed: tensors whose rows are re-indexed to an output vocabulary (shapes may differ).

    Raises:
        MergeConfigError / CheckpointError: bad ranges, a base not among a slice's sources,
            layer counts that differ within a slice, or tensors missing or mis-shaped.
    """
    assert spec.slices
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
        base_ref = sl.base_model or spec.base_model
        base_pos: int | None = None
        if method.base == "required" or (method.base == "optional" and base_ref):
            if base_ref is None:
                raise WeightsError(f"method {method.name!r} needs a base model; give base_model")
            hits = [j for j, r in enumerate(idx) if same(base_ref, r)]
            if not hits:
                raise MergeConfigError(f"slices[{si}]: the base model {base_ref} must be one of the slice's sources")
            base_pos = hits[0]
        non_base = [j for j in range(len(idx)) if j != base_pos]
        check_count(method, len(non_base), f"slices[{si}]: ")
        shared: list[Scope] = [sl.parameters, spec.parameters]
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
                raise CheckpointError(f"tensor {n!r} is missing from {readers[r].label}; the slice's models differ")
            if ref is None or (info.shape != ref.shape and not reindexed(jb.name)):
                raise CheckpointError(f"shape mismatch for tensor {n!r} in {readers[r].label}; the slice's models differ")
    return SlicePlan(jobs, out_layer, layer_sources)
