"""Soups in memory: load the experts once, then rebuild a live model's weights per weight vector.

The SoCE weight search evaluates dozens of soups. Writing each to disk and loading it back
would cost a full merge plus a model load per point; instead :class:`ExpertBank` holds every
expert's tensors (in their own dtype, on CPU or GPU) and :meth:`ExpertBank.build_into` writes
``sum_i w_i * theta_i`` straight into the parameters of one live model. It uses the same merge
methods, element for element, as the disk engine, so the in-memory soup equals the on-disk one
bit for bit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperlab.soup.checkpoint import FLOAT_DTYPES, open_checkpoint
from paperlab.soup.errors import MergeConfigError, WeightsError
from paperlab.soup.methods import REQUIRED, MergeMethod, MethodParams, get_method
from paperlab.soup.validate import plan_merge

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def bank_params(method: MergeMethod, weights: Sequence[float] | None, n: int,
                given: dict[str, Any]) -> MethodParams:
    """A method's parameters for every tensor of an in-memory soup: the values ``given`` (None:
    not given) checked by the method's declaration, the method's defaults for the rest.

    Raises:
        MergeConfigError: a value the method does not take, or one out of range.
        WeightsError: weights that do not fit the method.
    """
    shared: dict[str, Any] = {}
    per_model: dict[str, tuple[Any, ...]] = {}
    for name, value in given.items():
        if value is not None and method.param(name) is None:
            raise MergeConfigError(f"method {method.name!r} takes no {name}")
    for p in method.params:
        if p.name == "weight":
            continue
        value = given.get(p.name)
        value = p.default if value is None else p.check(value, "")
        if value is REQUIRED:
            raise MergeConfigError(f"method {method.name!r} needs {p.name}; ExpertBank soups take only weights")
        if p.per_model:
            per_model[p.name] = (value,) * n
        else:
            shared[p.name] = value
    w = method.resolve(weights, n, normalize=bool(shared.get(method.normalize_param, False)))
    return MethodParams(w, shared, per_model)


class ExpertBank:
    """The experts' tensors, loaded once.

    Args:
        paths: the expert checkpoint directories (validated against each other like a merge).
        base: a base model directory, for task_arithmetic and ties.
        device: where the tensors live ("cpu", "cuda", ...).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        base: str | os.PathLike[str] | None = None,
        device: str = "cpu",
    ) -> None:
        from safetensors import safe_open

        self.paths = [Path(p) for p in paths]
        self.device = device
        checkpoints = [open_checkpoint(p) for p in self.paths]
        base_ck = open_checkpoint(base) if base is not None else None
        self.plan = plan_merge(checkpoints, base=base_ck)
        self.names = self.plan.names
        self.base_path = Path(base) if base is not None else None

        def load(ck: Any) -> dict[str, torch.Tensor]:
            out: dict[str, torch.Tensor] = {}
            files: dict[Path, list[str]] = {}
            for n in self.names:
                files.setdefault(ck.tensors[n].file, []).append(n)
            for f, names in files.items():
                with safe_open(str(f), framework="pt", device=str(device)) as fh:
                    for n in names:
                        out[n] = fh.get_tensor(n).reshape(-1)
            return out

        self.experts = [load(ck) for ck in checkpoints]
        self.base = load(base_ck) if base_ck is not None else None
        self._scratch: torch.Tensor | None = None  # reused float32 result buffer (no page faults)
        log.debug("expert bank: %d experts, %d tensors on %s", len(self.experts), len(self.names), device)

    def __len__(self) -> int:
        return len(self.experts)

    def _params(self, method: str, weights: Sequence[float] | None, *, normalize: bool | None,
                scale: float, density: float) -> tuple[Any, MethodParams]:
        m = get_method(method)
        if m.needs_base and self.base is None:
            raise WeightsError(f"method {method!r} needs a base model; build the ExpertBank with base=")
        return m, bank_params(m, weights, len(self.experts),
                              {"normalize": normalize, "lambda": None if scale == 1.0 else scale,
                               "density": None if density == 1.0 else density})

    def tensor(self, name: str, method: Any, params: MethodParams) -> torch.Tensor:
        """One merged tensor, float32, flattened (a view of a reused buffer: copy it to keep it)."""
        import torch

        inputs = [e[name] for e in self.experts]
        if self.plan.infos[name].dtype not in FLOAT_DTYPES:
            return inputs[0]
        out = None
        if method.elementwise or method.writes_out:
            if self._scratch is None:
                most = max(self.plan.infos[n].numel for n in self.names)
                self._scratch = torch.empty(most, dtype=torch.float32, device=self.device)
            out = self._scratch
        # The same per-tensor fields the disk engine resolves (row-wise methods, seeded drops).
        params = replace(params, shape=self.plan.infos[name].shape, key=name)
        return method.combine(inputs, self.base[name] if self.base else None, params, out=out)

    def build(
        self,
        weights: Sequence[float] | None,
        *,
        method: str = "linear",
        normalize: bool | None = None,
        scale: float = 1.0,
        density: float = 1.0,
        dtype: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """The soup as a state dict (shaped tensors in ``dtype``, default the plan's)."""
        from typing import get_args

        import torch

        from paperlab.soup.config import DtypeName

        if dtype is not None and dtype not in get_args(DtypeName):
            raise MergeConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(get_args(DtypeName))}")
        m, params = self._params(method, weights, normalize=normalize, scale=scale, density=density)
        out_dtype = getattr(torch, dtype or self.plan.out_dtype)
        out = {}
        for n in self.names:
            t = self.tensor(n, m, params)
            t = t.to(out_dtype if t.is_floating_point() else t.dtype, copy=True)
            out[n] = t.reshape(self.plan.infos[n].shape)
        return out

    def build_into(
        self,
        model: torch.nn.Module,
        weights: Sequence[float] | None,
        *,
        method: str = "linear",
        normalize: bool | None = None,
        scale: float = 1.0,
        density: float = 1.0,
    ) -> torch.nn.Module:
        """Overwrite ``model``'s parameters with the soup for ``weights`` (no disk, no new model).

        Tensors whose names the model lacks are an error; tied parameters are written once.
        """
        import torch

        m, params = self._params(method, weights, normalize=normalize, scale=scale, density=density)
        state = model.state_dict(keep_vars=True)
        missing = [n for n in self.names if n not in state]
        if missing:
            raise WeightsError(f"the live model has no parameter {missing[0]!r}; build it from the experts' config")
        with torch.no_grad():
            for n in self.names:
                target = state[n]
                target.view(-1).copy_(self.tensor(n, m, params))
        return model

    def load_model(self, **kwargs: Any) -> torch.nn.Module:
        """A live model with the first expert's config and weights (to rebuild soups into)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(self.paths[0]), **kwargs)
        return model.to(self.device).eval()  # type: ignore[arg-type]  # transformers types .to() narrowly
