"""numpy / torch dispatch for the metrics: one small namespace of the few ops they need.

A metric is written once against :class:`Ops`; ``numpy`` runs it on the CPU in float64 and
``torch`` runs it on CUDA when present (CPU otherwise), also in float64 so both backends agree to
round-off. torch is imported only when the torch backend is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from paperlab.errors import AlignError

BACKENDS = ("numpy", "torch", "auto")


@dataclass(frozen=True)
class Ops:
    """The array operations the metrics use, for one backend."""

    name: str
    device: str = "cpu"

    @property
    def xp(self) -> Any:
        if self.name == "numpy":
            return np
        import torch

        return torch

    def asarray(self, x: Any, dtype: str = "float64") -> Any:
        """Convert features to this backend's 2-D array (float64 by default)."""
        if self.name == "numpy":
            if _is_torch(x):
                x = x.detach().cpu().numpy()
            a = np.asarray(x, dtype=np.float64 if dtype == "float64" else np.float32)
        else:
            import torch

            t = x if _is_torch(x) else torch.as_tensor(np.asarray(x))
            a = t.to(device=self.device, dtype=getattr(torch, dtype))
        if a.ndim != 2:
            raise AlignError(
                f"features must be a 2-D array (items, dims), got shape {tuple(a.shape)}"
            )
        if not bool(self.xp.isfinite(a).all()):
            raise AlignError("features contain NaN or inf; clean or drop those items first")
        return a

    def mean(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        if self.name == "numpy":
            return x.mean(axis=axis, keepdims=keepdims)
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    def sum(self, x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        if self.name == "numpy":
            return x.sum(axis=axis, keepdims=keepdims)
        return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

    def diag(self, x: Any) -> Any:
        return self.xp.diag(x)

    def fill_diagonal(self, x: Any, value: float) -> Any:
        """Return a copy of square ``x`` with its diagonal set to ``value``."""
        y = x.copy() if self.name == "numpy" else x.clone()
        if self.name == "numpy":
            np.fill_diagonal(y, value)
        else:
            y.fill_diagonal_(value)
        return y

    def median(self, x: Any) -> float:
        # torch.median returns the lower middle value; numpy averages: use numpy for both.
        v = x if self.name == "numpy" else x.detach().cpu().numpy()
        return float(np.median(v))

    def item(self, x: Any) -> float:
        return float(x) if self.name == "numpy" else float(x.item())

    def l2_normalize(self, x: Any) -> Any:
        """Rows scaled to unit L2 norm (zero rows stay zero)."""
        norms = self.xp.sqrt(self.sum(x * x, axis=1, keepdims=True))
        return x / self.xp.where(norms > 0, norms, self.xp.ones_like(norms))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def get_ops(backend: str = "auto", *inputs: Any, device: str | None = None) -> Ops:
    """Pick the backend: ``numpy``, ``torch`` (CUDA when present), or ``auto`` (torch when an
    input already is a torch tensor, else numpy).

    Raises:
        AlignError: an unknown backend name.
    """
    if backend not in BACKENDS:
        raise AlignError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "torch" if any(_is_torch(x) for x in inputs) else "numpy"
    if backend == "numpy":
        return Ops("numpy")
    import torch

    if device is None:
        tensor_devs = [str(x.device) for x in inputs if _is_torch(x)]
        device = tensor_devs[0] if tensor_devs else ("cuda" if torch.cuda.is_available() else "cpu")
    return Ops("torch", device)
