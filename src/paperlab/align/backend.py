"""numpy / torch dispatch for the metrics: one small object per backend, in a registry.

A metric is written once against :class:`Ops`; :class:`NumpyOps` runs it on the CPU in float64
and :class:`TorchOps` on CUDA when present (CPU otherwise), also in float64 so both backends
agree to round-off. Each backend is one class holding all of its own operations, so adding one
(say, JAX) is one class and one :data:`BACKENDS` entry, not a branch in every method. torch is
imported only when the torch backend is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from paperlab.errors import AlignError


class Ops(Protocol):
    """The array operations the metrics use, for one backend."""

    name: ClassVar[str]
    device: str

    @property
    def xp(self) -> Any:
        """The array module (numpy or torch), for element-wise math (exp, sqrt, clip ...)."""
        ...

    def asarray(self, x: Any, dtype: str = "float64") -> Any: ...
    def to_numpy(self, x: Any) -> np.ndarray: ...
    def index(self, idx: np.ndarray) -> Any: ...
    def concat(self, parts: Sequence[Any]) -> Any: ...
    def mean(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any: ...
    def sum(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any: ...
    def std(self, x: Any, axis: int = 0) -> Any: ...
    def fill_diagonal(self, x: Any, value: float) -> Any: ...
    def median(self, x: Any) -> float: ...
    def item(self, x: Any) -> float: ...
    def l2_normalize(self, x: Any) -> Any: ...
    def svd(self, x: Any) -> tuple[Any, Any, Any]: ...
    def qr(self, x: Any) -> Any: ...
    def knn(self, x: Any, k: int, block_size: int | None = None) -> np.ndarray: ...
    def n_unique_rows(self, x: Any) -> int: ...


def _check_features(a: Any, ndim: int, finite: bool) -> None:
    if ndim != 2:
        raise AlignError(
            f"features must be a 2-D array (items, dims), got shape {tuple(a.shape)}"
        )
    if not finite:
        raise AlignError("features contain NaN or inf; clean or drop those items first")


class _Common:
    """Operations written once for both array modules (their spelling agrees)."""

    name: ClassVar[str]
    device: str = "cpu"

    @property
    def xp(self) -> Any:
        raise NotImplementedError

    def item(self, x: Any) -> float:
        return float(x)

    def sum(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        raise NotImplementedError

    def l2_normalize(self, x: Any) -> Any:
        """Rows scaled to unit L2 norm (zero rows stay zero)."""
        norms = self.xp.sqrt(self.sum(x * x, axis=1, keepdims=True))
        return x / self.xp.where(norms > 0, norms, self.xp.ones_like(norms))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.device == self.device  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.name, self.device))


class NumpyOps(_Common):
    """numpy, float64, CPU."""

    name: ClassVar[str] = "numpy"

    def __init__(self, device: str | None = None) -> None:
        self.device = "cpu"

    @property
    def xp(self) -> Any:
        return np

    def asarray(self, x: Any, dtype: str = "float64") -> np.ndarray:
        if _is_torch(x):
            x = x.detach().cpu().numpy()
        a = np.asarray(x, dtype=np.float64 if dtype == "float64" else np.float32)
        _check_features(a, a.ndim, a.ndim != 2 or bool(np.isfinite(a).all()))
        return a

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def index(self, idx: np.ndarray) -> np.ndarray:
        return idx

    def concat(self, parts: Sequence[Any]) -> np.ndarray:
        return np.concatenate(parts)

    def mean(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return x.mean(axis=axis, keepdims=keepdims)

    def sum(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return x.sum(axis=axis, keepdims=keepdims)

    def std(self, x: Any, axis: int = 0) -> Any:
        return x.std(axis=axis, ddof=1)

    def fill_diagonal(self, x: Any, value: float) -> Any:
        """Return a copy of square ``x`` with its diagonal set to ``value``."""
        y = x.copy()
        np.fill_diagonal(y, value)
        return y

    def median(self, x: Any) -> float:
        return float(np.median(x))

    def svd(self, x: Any) -> tuple[Any, Any, Any]:
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        return u, s, vt

    def qr(self, x: Any) -> Any:
        return np.linalg.qr(x)[0]

    def knn(self, x: Any, k: int, block_size: int | None = None) -> np.ndarray:
        from paperlab.align.knn import knn_blockwise

        return knn_blockwise(np.asarray(x, dtype=np.float32), k, block_size=block_size)

    def n_unique_rows(self, x: Any) -> int:
        return int(len(np.unique(np.ascontiguousarray(x), axis=0)))


class TorchOps(_Common):
    """torch, float64, on ``device`` (CUDA when present unless told otherwise)."""

    name: ClassVar[str] = "torch"

    def __init__(self, device: str | None = None) -> None:
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def xp(self) -> Any:
        import torch

        return torch

    def asarray(self, x: Any, dtype: str = "float64") -> Any:
        import torch

        t = x if _is_torch(x) else torch.as_tensor(np.asarray(x))
        a = t.to(device=self.device, dtype=getattr(torch, dtype))
        _check_features(a, a.ndim, a.ndim != 2 or bool(torch.isfinite(a).all()))
        return a

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.detach().cpu().numpy())

    def index(self, idx: np.ndarray) -> Any:
        import torch

        return torch.as_tensor(idx, device=self.device)

    def concat(self, parts: Sequence[Any]) -> Any:
        import torch

        return torch.cat(list(parts))

    def mean(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    def sum(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

    def std(self, x: Any, axis: int = 0) -> Any:
        return x.std(dim=axis)

    def fill_diagonal(self, x: Any, value: float) -> Any:
        y = x.clone()
        y.fill_diagonal_(value)
        return y

    def median(self, x: Any) -> float:
        # torch.median returns the lower middle value; numpy averages: use numpy for both.
        return float(np.median(self.to_numpy(x)))

    def item(self, x: Any) -> float:
        return float(x.item()) if _is_torch(x) else float(x)

    def svd(self, x: Any) -> tuple[Any, Any, Any]:
        import torch

        u, s, vt = torch.linalg.svd(x, full_matrices=False)
        return u, s, vt

    def qr(self, x: Any) -> Any:
        import torch

        return torch.linalg.qr(x)[0]

    def knn(self, x: Any, k: int, block_size: int | None = None) -> np.ndarray:
        from paperlab.align.knn import knn_torch

        out = knn_torch(x.float(), k, block_size=block_size, device=self.device)
        return np.asarray(out.cpu().numpy())

    def n_unique_rows(self, x: Any) -> int:
        import torch

        return int(torch.unique(x, dim=0).shape[0])


#: Registry: backend name -> class (constructed with an optional device).
BACKENDS: dict[str, Callable[[str | None], Ops]] = {"numpy": NumpyOps, "torch": TorchOps}
#: Names accepted by :func:`get_ops` (``auto`` picks from the inputs).
BACKEND_NAMES = (*BACKENDS, "auto")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def get_ops(backend: str = "auto", *inputs: Any, device: str | None = None) -> Ops:
    """Pick the backend: ``numpy``, ``torch`` (CUDA when present), or ``auto`` (torch when an
    input already is a torch tensor, else numpy). A torch input's device is kept.

    Raises:
        AlignError: an unknown backend name.
    """
    if backend == "auto":
        backend = "torch" if any(_is_torch(x) for x in inputs) else "numpy"
    if backend not in BACKENDS:
        raise AlignError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKEND_NAMES)}")
    if device is None and backend == "torch":
        tensor_devs = [str(x.device) for x in inputs if _is_torch(x)]
        device = tensor_devs[0] if tensor_devs else None
    return BACKENDS[backend](device)
