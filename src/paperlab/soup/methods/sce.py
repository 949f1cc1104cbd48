"""``sce`` (FuseChat's Select, Calculate, Erase; Wan et al. 2024), as mergekit 0.1.5 computes it.

Per tensor, with base b and task vectors d_i = x_i - b stacked over the models:

    select: with select_topk < 1, keep the positions whose variance over the models (population
            variance) is among the int(select_topk * nonzero) largest; zero the rest in every d_i
    calculate: w_i = mean(d_i^2), divided by sum_i w_i (1/N each when that sum is under 1e-6)
    erase: TIES's sign election m_i over the (selected) deltas
    theta = b + sum_i d_i w_i m_i / max(sum_i w_i m_i, 1e-6)

No user weights: the weights are computed from the deltas. Ties at the variance cut go the way
``torch.topk`` takes them (mergekit's own call).

The (models, entries) stack of task vectors is never built: the per-column steps (the
variance, the election, the weighted sums over the models) run on column blocks of it,
recomputed from the inputs, on two threads; each whole-tensor reduction (the top-k of the
variances, the models' mean squares) is mergekit's call on the same whole tensor, built in one
buffer that then holds the result.
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
)
from paperlab.soup.methods.task_vectors import INT8_MASK, elect

if TYPE_CHECKING:
    import torch


class _Deltas:
    """One thread's buffers for a block of task-vector columns, allocated once per pass (a
    fresh block per step is mapped and page-faulted anew: glibc trims freed heap tops)."""

    def __init__(self, tensors: Sequence[torch.Tensor], base: torch.Tensor, dt: torch.dtype,
                 select: torch.Tensor | None, width: int) -> None:
        import torch

        self.tensors, self.base, self.select = tensors, base, select
        models, device = len(tensors), base.device
        self.tv, self.signs, self.erased = (torch.empty((models, width), dtype=dt, device=device) for _ in range(3))
        self.b, self.sums, self.majority = (torch.empty((1, width), dtype=dt, device=device) for _ in range(3))

    def load(self, s: int, e: int) -> torch.Tensor:
        """Columns [s, e) of mergekit's (selected) task vectors, (models, e - s)."""
        b, tv = self.b[0, : e - s], self.tv[:, : e - s]
        b.copy_(self.base[s:e])
        for i, x in enumerate(self.tensors):  # x and the base in the compute dtype, then x - base
            tv[i].copy_(x[s:e])
            tv[i].sub_(b)
        if self.select is not None:
            tv.mul_(self.select[s:e])  # tvs * mask.unsqueeze(0)
        return tv


    def mix(self, s: int, e: int, weights: torch.Tensor, out: torch.Tensor) -> None:
        """``out`` = base + mergekit's erased, weighted mean of the task-vector columns [s, e).

        Its steps on 0/1 masks in the compute dtype instead of bool ones (a product takes the
        same values, at memory speed where a bool operand took four to eight times as long):
        signs == majority sign (a zero sum elects +, a NaN sign never agrees), erased = w * that,
        (tv * erased).sum(models) / max(erased.sum(models), 1e-6)."""
        import torch

        k = e - s
        tv, signs, erased = self.load(s, e), self.signs[:, :k], self.erased[:, :k]
        sums, majority = self.sums[:, :k], self.majority[:, :k]
        torch.sign(tv, out=signs)
        torch.ge(torch.sum(tv, dim=0, keepdim=True, out=sums), 0, out=majority).mul_(2).sub_(1)
        torch.mul(weights, torch.eq(signs, majority, out=erased), out=erased)
        torch.sum(torch.mul(tv, erased, out=signs), dim=0, keepdim=True, out=sums)
        sums.div_(torch.sum(erased, dim=0, keepdim=True, out=majority).clamp_(min=1e-6))
        torch.add(self.b[:, :k], sums, out=out.view(1, k))


def _select(var: torch.Tensor, topk: float, mask_dtype: torch.dtype) -> torch.Tensor:
    """mergekit's sce_mask from the per-column variances: the top-k positions set to 1."""
    import torch

    k = int(torch.count_nonzero(var) * topk)
    mask = torch.zeros_like(var, dtype=mask_dtype)
    if k > 0:
        mask.view(-1)[torch.topk(var.abs().view(-1), k=k, largest=True).indices] = 1
    return mask


@register_method
class Sce(MergeMethod):
    name = mergekit = "sce"
    base = "required"
    elementwise = False
    reads_only = True  # every block of the inputs is copied before any arithmetic
    params: ClassVar[tuple[Param, ...]] = (Param("select_topk", default=1.0, low=0.0, high=1.0, open_low=True,
                    fix="the share of highest-variance positions kept; 1 keeps all"), INT8_MASK)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        assert base is not None
        dt, n, int8 = compute_dtype(params), base.numel(), params.get("int8_mask")
        mask_dtype = torch.int8 if int8 else dt
        # The variances, then each model's squares (mergekit's ``tvs.square()``), then the result
        # share one buffer. With one torch thread (as the CLI runs) each row's mean is the same
        # serial sum alone as inside the (models, n) stack, so one row at a time will do; with
        # more, torch splits a one-output reduction over its threads (another rounding), so the
        # whole stack is built and reduced by one call, as mergekit does.
        whole = torch.get_num_threads() > 1 and len(tensors) > 1
        work = torch.empty((len(tensors) if whole else 1, n), dtype=dt, device=base.device)
        select = None
        if params.get("select_topk") < 1:
            var = work[0]

            def variance(d: _Deltas, s: int, e: int) -> None:
                torch.var(d.load(s, e), dim=0, unbiased=False, out=var[s:e])

            over_blocks(n, base.device, lambda w: _Deltas(tensors, base, dt, None, w), variance)
            select = _select(var, params.get("select_topk"), mask_dtype)

        def square(d: _Deltas, s: int, e: int) -> None:
            torch.square(d.load(s, e), out=work[:, s:e])

        if whole:
            over_blocks(n, base.device, lambda w: _Deltas(tensors, base, dt, select, w), square)
            w = work.mean(dim=1)  # (N,)
        else:
            means = []
            for i in range(len(tensors)):
                one = tensors[i: i + 1]
                over_blocks(n, base.device, lambda w, one=one: _Deltas(one, base, dt, select, w), square)  # type: ignore[misc]
                means.append(work.mean(dim=1))
            w = torch.cat(means)
        total = torch.sum(w).item()
        w = torch.ones_like(w) / w.shape[0] if abs(total) < 1e-6 else w / total
        weights = w.unsqueeze(-1)

        def mix(d: _Deltas, s: int, e: int) -> None:
            if not int8:
                d.mix(s, e, weights, res[s:e])
                return
            tv = d.load(s, e)  # int8 signs: TIES's own election (a NaN's int8 sign is torch's to choose)
            erased = weights * elect(tv, int8)  # (N, c)
            merged = (tv * erased).sum(dim=0)
            torch.add(d.b[0, : e - s], merged / torch.sum(erased, dim=0).clamp(min=1e-6), out=res[s:e])

        res = work[0]
        over_blocks(n, base.device, lambda w: _Deltas(tensors, base, dt, select, w), mix)
        return res
