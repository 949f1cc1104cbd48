"""Checks that a set of checkpoints can be merged, before any tensor data is read.

Each bad-input class gets its own one-line message that names the models, the tensor and the
fix: architecture, vocabulary size, tied vs untied embeddings, tensor names, shapes. Mixed
dtypes are allowed (we accumulate in float32 anyway) but reported. The optional finite check
reads every tensor once, so it is off by default.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paperlab.soup.checkpoint import FLOAT_DTYPES, Checkpoint, TensorInfo
from paperlab.soup.errors import CheckpointError, MergeConfigError
from paperlab.soup.vocab import VOCAB_SUFFIXES

log = logging.getLogger(__name__)

LM_HEAD = "lm_head.weight"
_EMBED_SUFFIX = "embed_tokens.weight"
WRITABLE = ("float32", "float16", "bfloat16", "float64")


@dataclass
class MergePlan:
    """What the engine will write: tensors in output order, their dtype, and notes for the user.

    Attributes:
        names: tensor names, in the order of the first model's files and offsets (so reads of
            the first model are sequential).
        infos: name -> the first model's :class:`TensorInfo` (shape, source dtype).
        out_dtype: output dtype name for floating tensors (others are copied unchanged).
        notes: human-readable remarks (mixed dtypes, dropped tied lm_head copies).
        shapes: output shapes that differ from the input's (vocabulary tensors re-indexed to
            another vocabulary).
    """

    names: list[str]
    infos: dict[str, TensorInfo]
    out_dtype: str
    notes: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def out_dtype_of(self, name: str) -> str:
        src = self.infos[name].dtype
        return self.out_dtype if src in FLOAT_DTYPES else src

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self.shapes.get(name, self.infos[name].shape)

    def numel_of(self, name: str) -> int:
        return math.prod(self.shape_of(name))

    def out_nbytes(self, name: str) -> int:
        from paperlab.soup.checkpoint import DTYPES, TAG_OF

        return self.numel_of(name) * DTYPES[TAG_OF[self.out_dtype_of(name)]][1]


def _label(ck: Checkpoint) -> str:
    return ck.label


def _check_architecture(models: Sequence[Checkpoint]) -> None:
    ref = models[0]
    for ck in models[1:]:
        for key in ("model_type", "architectures"):
            a, b = ref.config.get(key), ck.config.get(key)
            if a != b:
                raise CheckpointError(
                    f"architecture mismatch: {_label(ref)} has {key}={a!r} but {_label(ck)} has {key}={b!r}; "
                    "only checkpoints of one architecture can be merged"
                )


def _vocab(ck: Checkpoint) -> int | None:
    for name, info in ck.tensors.items():
        if name.endswith(_EMBED_SUFFIX):
            return info.shape[0]
    v = ck.config.get("vocab_size")
    return int(v) if v is not None else None


def _check_vocab(models: Sequence[Checkpoint]) -> None:
    ref, rv = models[0], _vocab(models[0])
    for ck in models[1:]:
        v = _vocab(ck)
        if v != rv:
            raise CheckpointError(
                f"vocabulary size mismatch: {_label(ref)} has {rv} tokens but {_label(ck)} has {v}; "
                "resize the embeddings to one tokenizer before merging"
            )


def _check_tied(models: Sequence[Checkpoint]) -> None:
    ref = models[0]
    for ck in models[1:]:
        if ck.tied_embeddings != ref.tied_embeddings:
            raise CheckpointError(
                f"tied vs untied embeddings: {_label(ref)} has tie_word_embeddings={ref.tied_embeddings} "
                f"but {_label(ck)} has {ck.tied_embeddings}; merge only models that agree"
            )
    for ck in models:
        untied_without_head = not ck.tied_embeddings and LM_HEAD not in ck.tensors
        if untied_without_head and any(n.endswith(_EMBED_SUFFIX) for n in ck.tensors):
            raise CheckpointError(
                f"{_label(ck)}: embeddings are untied (tie_word_embeddings=false) but {LM_HEAD} is missing; "
                "the checkpoint is incomplete"
            )


def _tensor_names(ck: Checkpoint, tied: bool) -> set[str]:
    names = set(ck.tensors)
    if tied:
        # With tied embeddings the head is the embedding; a stored copy is redundant.
        names.discard(LM_HEAD)
    return names


def _check_tensors(models: Sequence[Checkpoint], tied: bool, reindex: bool = False) -> None:
    ref = models[0]
    ref_names = _tensor_names(ref, tied)
    for ck in models[1:]:
        names = _tensor_names(ck, tied)
        only_ref, only_ck = sorted(ref_names - names), sorted(names - ref_names)
        if only_ref or only_ck:
            which = (
                f"{only_ref[0]!r} is in {_label(ref)} but not in {_label(ck)}"
                if only_ref
                else f"{only_ck[0]!r} is in {_label(ck)} but not in {_label(ref)}"
            )
            extra = len(only_ref) + len(only_ck) - 1
            more = f" (and {extra} more)" if extra else ""
            raise CheckpointError(f"different tensor names: {which}{more}; the models have different architectures")
        for name in sorted(ref_names):
            a, b = ref.tensors[name].shape, ck.tensors[name].shape
            if a != b and not (reindex and name.endswith(VOCAB_SUFFIXES) and a[1:] == b[1:]):
                raise CheckpointError(
                    f"shape mismatch for tensor {name!r}: {list(a)} in {_label(ref)} vs {list(b)} in {_label(ck)}"
                )


def _order(ck: Checkpoint, names: set[str]) -> list[str]:
    return sorted(names, key=lambda n: (str(ck.tensors[n].file), ck.tensors[n].start, n))


def check_finite(
    models: Sequence[Checkpoint], names: Sequence[str], progress: Callable[[int], None] | None = None
) -> None:
    """Read every floating tensor once and refuse NaN or Inf.

    Raises:
        CheckpointError: naming the first tensor and model with a non-finite value.
    """
    import torch

    for ck in models:
        for name in names:
            info = ck.tensors[name]
            if info.dtype in FLOAT_DTYPES and not bool(torch.isfinite(ck.read(name)).all()):
                raise CheckpointError(f"tensor {name!r} in {_label(ck)} contains NaN or Inf; fix or drop that model")
            if progress is not None:
                progress(info.nbytes)


def check_finite_jobs(readers: Sequence[Checkpoint], jobs: Sequence[Any]) -> None:
    """:func:`check_finite` over the tensors that jobs read (each once).

    Raises:
        CheckpointError: naming the first tensor and model with a non-finite value.
    """
    import torch

    seen: set[tuple[int, str]] = set()
    for job in jobs:
        for r, name in [*job.inputs, *([job.base] if job.base else [])]:
            if (r, name) in seen:
                continue
            seen.add((r, name))
            ck = readers[r]
            if ck.tensors[name].dtype in FLOAT_DTYPES and not bool(torch.isfinite(ck.read(name)).all()):
                raise CheckpointError(f"tensor {name!r} in {_label(ck)} contains NaN or Inf; fix or drop that model")


def _default_dtype(dtypes: Counter[str]) -> str:
    """The inputs' most common floating dtype (what is written when the config names none)."""
    floats = [d for d, _ in dtypes.most_common() if d in WRITABLE]
    return floats[0] if floats else "float32"


def plan_slices(readers: Sequence[Checkpoint], jobs: Sequence[Any], *, out_dtype: str | None = None,
                allow_crimes: bool = False, reindex: bool = False) -> MergePlan:
    """The output plan of a ``slices:`` merge (jobs already checked for names and shapes).

    Args:
        out_dtype: the validated output dtype (None: the inputs').
        allow_crimes: accept models of different architectures (their tensors must still fit).
        reindex: vocabulary tensors are re-indexed to an output vocabulary (sizes may differ).

    Raises:
        CheckpointError: models of different architectures or vocabularies.
    """
    if not allow_crimes:
        _check_architecture(readers)
    if not reindex:
        _check_vocab(readers)
    _check_tied(readers)
    tied = readers[0].tied_embeddings
    infos = {}
    names = []
    for job in jobs:
        if tied and job.name == LM_HEAD:
            continue
        r, n = job.inputs[0]
        infos[job.name] = readers[r].tensors[n]
        names.append(job.name)
    return MergePlan(names, infos, out_dtype or _default_dtype(Counter(i.dtype for i in infos.values())), [])


def plan_merge(
    models: Sequence[Checkpoint],
    *,
    base: Checkpoint | None = None,
    out_dtype: str | None = None,
    allow_crimes: bool = False,
    reindex: bool = False,
) -> MergePlan:
    """Validate the models (and base) against each other and plan the output.

    Args:
        out_dtype: the validated output dtype (None: the first model's).
        allow_crimes: accept models of different architectures (their tensors must still fit).
        reindex: vocabulary tensors are re-indexed to an output vocabulary (sizes may differ).

    Raises:
        CheckpointError: one line per incompatibility class.
    """
    if not models:
        raise MergeConfigError("no models to merge; give at least one model")
    everyone = [*models, *([base] if base is not None else [])]
    if not allow_crimes:
        _check_architecture(everyone)
    if not reindex:
        _check_vocab(everyone)
    _check_tied(everyone)
    tied = models[0].tied_embeddings
    _check_tensors(everyone, tied, reindex)
    names = _order(models[0], _tensor_names(models[0], tied))
    infos = {n: models[0].tensors[n] for n in names}
    notes: list[str] = []
    for ck in everyone:
        if tied and LM_HEAD in ck.tensors:
            notes.append(f"{_label(ck)}: dropped the stored {LM_HEAD}; embeddings are tied")
    dtype_sets = {_label(ck): Counter(ck.tensors[n].dtype for n in names) for ck in everyone}
    firsts = {label: c.most_common(1)[0][0] for label, c in dtype_sets.items() if c}
    if len(set(firsts.values())) > 1:
        notes.append("mixed dtypes: " + ", ".join(f"{k} is {v}" for k, v in firsts.items()))
    out = out_dtype or _default_dtype(dtype_sets.get(_label(models[0]), Counter()))
    for note in notes:
        log.warning("%s", note)
    return MergePlan(names, infos, out, notes)
