"""The merge-method interface and its registry (name -> method).

A method combines, element by element or tensor by tensor, the same tensor taken from N
models (and optionally a base model) into one float32 tensor. Every method sees flattened
1-D tensors in the models' own dtype and does its arithmetic in float32, one correctly rounded
torch operation at a time, so that the result does not depend on how a tensor was cut into
pieces or how many threads torch used.

A new method is one small module that defines a class and decorates it with
:func:`register_method`; the registry checks its shape when the module is imported.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.errors import MergeConfigError, WeightsError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MethodParams:
    """The numbers a method needs besides the tensors, resolved for one tensor.

    Attributes:
        weights: one weight per (non-base) model, validated; divided by their sum beforehand
            only by methods that average (linear, uniform), others apply ``normalize`` themselves.
        normalize: linear: divide by the weight sum; task-vector methods: divide the merged
            delta by the sum of the weights that took part (mergekit's rule).
        scale: lambda, the factor on the merged task vector.
        density: the fraction kept, when every model has the same one.
        densities / gammas / epsilons: per model, when given (else ``density`` / 0.01 / 0.15).
        rescale: after dropping entries, rescale to the delta's L1 norm (None: the method's default).
        t: the interpolation position of slerp (0: the base model, 1: the other).
        options: method switches (filter_wise, nuslerp_flatten, nuslerp_row_wise).
        shape: the tensor's shape (methods that work row by row need it).
        key: the tensor name and ``seed``, which seed the random drops (see :func:`rng_for`).
    """

    weights: tuple[float, ...]
    normalize: bool = True
    scale: float = 1.0
    density: float = 1.0
    densities: tuple[float, ...] | None = None
    gammas: tuple[float, ...] | None = None
    epsilons: tuple[float, ...] | None = None
    rescale: bool | None = None
    t: float = 0.5
    options: tuple[tuple[str, bool], ...] = ()
    shape: tuple[int, ...] | None = None
    key: str = ""
    seed: int = 0

    def density_of(self, i: int) -> float:
        return self.densities[i] if self.densities is not None else self.density

    def option(self, name: str, default: bool) -> bool:
        return dict(self.options).get(name, default)


def rng_for(params: MethodParams, model_index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The random generator for model ``model_index``'s drops in one tensor.

    Seeded with the first 8 bytes of sha256("SEED:TENSOR_NAME:MODEL_INDEX"), so a merge is
    reproducible, and independent of tensor order, piece size and thread count.
    """
    import hashlib

    import torch

    digest = hashlib.sha256(f"{params.seed}:{params.key}:{model_index}".encode()).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


class MergeMethod:
    """Base class for merge methods.

    Class attributes:
        name: the registry key.
        needs_base: the method needs a base model (task vectors are taken against it).
        elementwise: output element j depends only on input elements j, so a tensor may be
            processed in pieces (bounding memory below the largest tensor).
        takes_weights: the user gives one weight per model.
    """

    name: ClassVar[str] = ""
    mergekit: ClassVar[str] = ""  # mergekit's name for the same computation ("" when it has none)
    needs_base: ClassVar[bool] = False
    base_optional: ClassVar[bool] = False  # takes a base model when given (nuslerp)
    min_models: ClassVar[int] = 1  # non-base models
    max_models: ClassVar[int | None] = None
    prenormalize: ClassVar[bool] = True  # weights divided by their sum before combine()
    default_normalize: ClassVar[bool] = False
    # Parameters a user may set: shared (top level or slice) and per model (non-base).
    shared_params: ClassVar[tuple[str, ...]] = ("normalize",)
    model_params: ClassVar[tuple[str, ...]] = ("weight",)
    elementwise: ClassVar[bool] = True
    takes_weights: ClassVar[bool] = True
    allow_negative: ClassVar[bool] = False

    def resolve(self, weights: Sequence[float] | None, n: int, *, normalize: bool) -> tuple[float, ...]:
        """Check the user's weights against the method and return the ones to use.

        Raises:
            WeightsError: wrong count, negative (where not allowed), all zero, or not finite.
        """
        if not self.takes_weights:
            if weights is not None and len(set(weights)) > 1:
                raise WeightsError(f"method {self.name!r} takes no weights; drop them or use 'linear'")
            return tuple(1.0 / n for _ in range(n))
        if weights is None:
            raise WeightsError(f"method {self.name!r} needs one weight per model; give --weight for each model")
        w = [float(x) for x in weights]
        if len(w) != n:
            raise WeightsError(f"got {len(w)} weight(s) for {n} model(s); give exactly one weight per model")
        if any(x != x or x in (float("inf"), float("-inf")) for x in w):
            raise WeightsError(f"weights must be finite numbers, got {w}")
        if not self.allow_negative and any(x < 0 for x in w):
            raise WeightsError(f"method {self.name!r} needs non-negative weights, got {w}")
        if all(x == 0 for x in w):
            raise WeightsError("all weights are zero; at least one model must have a non-zero weight")
        if normalize and self.prenormalize:
            total = sum(w)
            w = [x / total for x in w]
        elif normalize and not self.allow_negative and sum(w) == 0:
            raise WeightsError(f"weights {w} sum to zero and cannot be normalised; pass normalize: false")
        return tuple(w)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Merge one tensor (flattened, any float dtype) from each model into float32.

        ``out``, when given, is a float32 buffer at least as long as the tensors that the
        method may write into (and return a view of) instead of allocating.
        """
        raise NotImplementedError


METHODS: dict[str, MergeMethod] = {}


def register_method(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Class decorator: add a method to the registry under ``cls.name``."""
    if not cls.name or not isinstance(cls.name, str):
        raise TypeError(f"{cls.__name__} needs a non-empty string `name`")
    if cls.combine is MergeMethod.combine:
        raise TypeError(f"{cls.__name__} must implement combine()")
    if cls.name in METHODS:
        raise TypeError(f"merge method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> MergeMethod:
    """The registered method called ``name``.

    Raises:
        MergeConfigError: unknown name (the message lists the valid ones).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise MergeConfigError(
            f"unknown merge method {name!r}; valid methods: {', '.join(sorted(METHODS))}"
        ) from None


def to_f32(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` as float32, into ``out`` when given (a reusable buffer)."""
    import torch

    if out is None:
        return x.to(torch.float32, copy=True)
    out.copy_(x)
    return out


# Work in blocks that stay in the CPU cache: the convert, multiply and add of one block then
# cost about one pass over memory instead of three, and no large temporary is allocated.
_BLOCK = 1 << 16
_scratch = threading.local()


def _tmp(n: int, device: torch.device) -> torch.Tensor:
    import torch

    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    buf = bufs.get(device)
    if buf is None or buf.numel() < n:
        buf = bufs[device] = torch.empty(n, dtype=torch.float32, device=device)
    return buf[:n]


def weighted_sum(
    tensors: Sequence[torch.Tensor], weights: Sequence[float], out: torch.Tensor | None = None
) -> torch.Tensor:
    """sum_i w_i * x_i in float32 over flat tensors, left to right, each multiply-add rounded
    once (a fused ``add(x, alpha=w)``, as mergekit's ``addcmul``), so the result does not depend
    on the block size or thread count and matches mergekit's linear bit for bit.

    Args:
        tensors: flat tensors of one length, any float dtype.
        weights: one weight per tensor.
        out: a float32 buffer of at least that length to write into (else a new tensor).
    """
    import torch

    n = tensors[0].numel()
    device = tensors[0].device
    acc = torch.empty(n, dtype=torch.float32, device=device) if out is None else out[:n]
    # On an accelerator, whole-tensor kernels beat many small launches; blocks are a CPU-cache trick.
    block = _BLOCK if device.type == "cpu" else max(n, 1)
    tmp = _tmp(min(n, block), device)
    for s in range(0, n, block):
        e = min(n, s + block)
        a, t = acc[s:e], tmp[: e - s]
        a.copy_(tensors[0][s:e])
        a.mul_(weights[0])
        for x, w in zip(tensors[1:], weights[1:], strict=True):
            t.copy_(x[s:e])
            a.add_(t, alpha=w)
    return acc
