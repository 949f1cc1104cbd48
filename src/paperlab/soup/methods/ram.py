"""``ram`` and ``ramplus_tl`` (Reinforced Agent Merging), as mergekit 0.1.5 computes them.

Per tensor, with base b and task vectors d_i = x_i - b: an entry of d_i is active when
|d_i| > epsilon. Where exactly one model is active its delta is added whole; where several are,
their deltas are averaged; where none is, the base stays:

    theta = b + sum_i d_i [active_i] ([unique] * lambda_i + [shared] / count)

``ram`` has lambda_i = 1. ``ramplus_tl`` rescales each model's unique entries by
lambda_i = 1 + r * clip(rho_i, 0, alpha), rho_i = (its shared active entries) / (its unique
active entries) over the whole tensor ("tensor-local"), so it works on whole tensors; ``ram``
is elementwise and streams in pieces.

Both run mergekit's expression on one column block of the (models, entries) stack at a time
(each column is computed on its own, the sum over the models included, so any block gives the
whole tensor's bits), on two threads: about a tenth of the time of the whole-tensor expression,
whose every step page-faults a fresh (models, entries) temporary. ``ramplus_tl``'s counts are
integers, summed exactly over the blocks in a first pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.methods.base import (
    MergeMethod,
    MethodParams,
    Param,
    compute_dtype,
    over_blocks,
    register_method,
    result_in,
)

if TYPE_CHECKING:
    import torch

EPSILON = Param("epsilon", default=1e-5, low=0.0, fix="entries at or below it count as unchanged")


class _Columns:
    """One thread's buffers for a block of columns, allocated once per tensor (a fresh block
    per step would be mapped and page-faulted anew each time: glibc trims freed heap tops).

    The masks are 0/1 in the compute dtype and the counts exact small integers in float32
    rather than mergekit's bool and int64 tensors: a product or quotient takes the same values
    either way (torch converts a bool or integer operand to the float dtype first; int64 ->
    bfloat16 and float32 -> bfloat16 round an integer alike), and float operands run at memory
    speed where mixed-dtype ones took four to eight times as long."""

    def __init__(self, models: int, width: int, dt: torch.dtype, acc: torch.dtype, device: torch.device) -> None:
        import torch

        def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.empty(shape, dtype=dtype, device=device)

        self.tv, self.w, self.active = (empty((models, width), dt) for _ in range(3))
        self.acc = self.w if acc == dt else empty((models, width), acc)
        self.counts = empty((1, width), torch.float32)
        self.flag, self.divisor = empty((1, width), dt), empty((1, width), dt)
        self.b, self.merged = empty((width,), dt), empty((1, width), acc)

    def load(self, tensors: Sequence[torch.Tensor], base: torch.Tensor, s: int, e: int, eps: float) -> int:
        """Columns [s, e) of mergekit's task vectors (in ``tv``), their active mask and the count
        of active models per column. Returns the block's width."""
        import torch

        k = e - s
        b, tv, active, counts = self.b[:k], self.tv[:, :k], self.active[:, :k], self.counts[0, :k]
        b.copy_(base[s:e])
        for i, x in enumerate(tensors):  # x and the base in the compute dtype, then x - base: mergekit's values
            tv[i].copy_(x[s:e])
            tv[i].sub_(b)
        torch.gt(torch.abs(tv, out=self.w[:, :k]), eps, out=active)  # compared in tv's dtype, as mergekit's
        counts.copy_(active[0])
        for row in active[1:]:  # integers: exact in any order
            counts.add_(row)
        return k

    def merge(self, k: int, lam: torch.Tensor | None, out: torch.Tensor) -> None:
        """``out`` = base + mergekit's merged task vector of the loaded columns, operand for
        operand: (tv_z * unique [* lambda] + tv_z * shared / max(count, 1)).sum(models)."""
        import torch

        tv, counts, flag, w, acc = self.tv[:, :k], self.counts[:, :k], self.flag[:, :k], self.w[:, :k], self.acc[:, :k]
        tv.mul_(self.active[:, :k])  # tv_z
        torch.mul(tv, torch.eq(counts, 1, out=flag), out=w)
        if lam is not None:
            torch.mul(w, lam, out=acc)  # a float32 lambda promotes a half-dtype merge, as in mergekit
        tv.mul_(torch.gt(counts, 1, out=flag)).div_(self.divisor[:, :k].copy_(counts).clamp_(min=1))
        acc.add_(tv)
        torch.sum(acc, dim=0, keepdim=True, out=self.merged[:, :k])  # mergekit's reduction over the models
        torch.add(self.b[:k], self.merged[0, :k], out=out)

    def counted(self, k: int, shared: bool) -> torch.Tensor:
        """Per model, how many of its active entries among the loaded columns are shared (or
        unique), as int64 (a block's count is exact in float32)."""
        import torch

        counts, flag, w = self.counts[:, :k], self.flag[:, :k], self.w[:, :k]
        (torch.gt if shared else torch.eq)(counts, 1, out=flag)
        return torch.mul(self.active[:, :k], flag, out=w).sum(dim=1, dtype=torch.float32).to(torch.int64)


def _result(n: int, dtype: torch.dtype, device: torch.device, out: torch.Tensor | None) -> torch.Tensor:
    import torch

    if out is not None and out.dtype == dtype and out.device == device:
        return out[:n]
    return torch.empty(n, dtype=dtype, device=device)


@register_method
class Ram(MergeMethod):
    name = mergekit = "ram"
    base = "required"
    reads_only = True  # every block of the inputs is converted into a new tensor before any arithmetic
    params: ClassVar[tuple[Param, ...]] = (EPSILON,)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:

        assert base is not None
        eps, dt = params.get("epsilon"), compute_dtype(params)
        res = _result(base.numel(), dt, base.device, out)

        def work(cols: _Columns, s: int, e: int) -> None:
            cols.merge(cols.load(tensors, base, s, e, eps), None, res[s:e])

        over_blocks(base.numel(), base.device, lambda w: _Columns(len(tensors), w, dt, dt, base.device), work)
        return res


@register_method
class RamPlus(MergeMethod):
    name = mergekit = "ramplus_tl"
    base = "required"
    elementwise = False
    reads_only = True
    writes_out = True
    params: ClassVar[tuple[Param, ...]] = (Param("r", default=0.1, low=0.0, fix="the strength of the unique-entry rescaling"),
              Param("alpha", default=0.2, low=0.0, fix="the bound on the shared/unique ratio"), EPSILON)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import threading

        import torch

        assert base is not None
        eps, dt, n = params.get("epsilon"), compute_dtype(params), base.numel()
        zero = torch.zeros(len(tensors), dtype=torch.int64, device=base.device)
        shared_counts, unique_counts = zero.clone(), zero.clone()
        lock = threading.Lock()

        def count(cols: _Columns, s: int, e: int) -> None:  # integer sums: exact in any grouping
            k = cols.load(tensors, base, s, e, eps)
            shared, unique = cols.counted(k, True), cols.counted(k, False)
            with lock:
                shared_counts.add_(shared)
                unique_counts.add_(unique)

        over_blocks(n, base.device, lambda w: _Columns(len(tensors), w, dt, dt, base.device), count)
        rho = shared_counts / unique_counts.clamp(min=eps)
        lam = 1 + params.get("r") * rho.clamp(min=0, max=params.get("alpha"))
        # The float32 lambda promotes a half-dtype merge to float32 from here on, as in mergekit.
        acc = torch.promote_types(dt, lam.dtype)
        res = result_in(out, n, acc, base)
        lam_col = lam.unsqueeze(-1)

        def work(cols: _Columns, s: int, e: int) -> None:
            cols.merge(cols.load(tensors, base, s, e, eps), lam_col, res[s:e])

        over_blocks(n, base.device, lambda w: _Columns(len(tensors), w, dt, acc, base.device), work)
        return res
