"""Task-vector methods: task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs,
breadcrumbs_ties, della, della_linear (mergekit's "generalized task arithmetic").

Per tensor, with base b, models x_i, weights w_i, all in the compute dtype:

    d_i   = drop(x_i - b)          # none | magnitude (ties) | random (dare) | outliers (breadcrumbs) | rank (della)
    d_i  *= w_i
    sign election (ties, dare_ties, breadcrumbs_ties, della):
        s  = +1 where sum_i d_i >= 0 else -1      (a zero sum elects +; mergekit's rule)
        m_i = sign(d_i) == s                       (a zero entry never votes)
        D  = sum_i d_i * m_i,  W = sum_i w_i * m_i (W = 1 where no model agrees)
    otherwise:
        D  = sum_i d_i,        W = sum_i w_i      (W = 1 when |W| < 1e-8)
    normalize: D /= W;  lambda: D *= lambda;  theta = b + D

The deltas are stacked and summed over the model axis as mergekit does, so that with a
float16 or bfloat16 compute dtype the roundings are mergekit's too. Defaults follow mergekit:
normalize is on for ties and della, off for the rest; rescale (the kept entries scaled back to
the dropped vector's L1 norm) is on for dare_* and della*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from paperlab.soup.errors import MergeConfigError
from paperlab.soup.methods import random_drops, sparsify
from paperlab.soup.methods.base import (
    MergeMethod,
    MethodParams,
    Param,
    compute_dtype,
    in_halves,
    load,
    pool,
    register_method,
    rng_for,
)
from paperlab.soup.methods.spares import SPARES

if TYPE_CHECKING:
    import torch

WEIGHT = Param("weight", per_model=True)
DENSITY = Param("density", per_model=True, default=1.0, low=0.0, high=1.0, open_low=True, fix="1 keeps every entry")
LAMBDA = Param("lambda", default=1.0)
INT8_MASK = Param("int8_mask", kind=bool, default=False)


_COLUMNS = 1 << 16  # column block for the election: temporaries of N x 64Ki, not N x n


def elect(deltas: torch.Tensor, int8_mask: bool) -> torch.Tensor:
    """TIES's sign election over the model axis: where each delta agrees with the sign of the
    summed deltas (a zero sum elects +; a zero entry never agrees). ``int8_mask`` (mergekit's
    mask dtype) changes no value: the mask holds the same 0s and 1s either way."""
    import torch

    majority = (deltas.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
    mask = torch.empty(deltas.shape, dtype=torch.bool, device=deltas.device)
    for s in range(0, deltas.shape[1], _COLUMNS):
        e = s + _COLUMNS
        # sign(d) == majority exactly where d * majority > 0 (a product by +-1 is exact; a zero
        # or NaN delta agrees with neither): one product and one compare, against a sign, a
        # cast and a compare.
        torch.gt(deltas[:, s:e] * majority[s:e], 0, out=mask[:, s:e])
    return mask


class TaskVectorMethod(MergeMethod):
    """The shared computation; subclasses choose the drop and whether signs are elected."""

    base = "required"
    allow_negative = True
    elementwise = False
    consensus: ClassVar[bool] = False
    drop: ClassVar[str | None] = None  # None | "magnitude" | "random" | "outliers" | "della"
    params: ClassVar[tuple[Param, ...]] = (WEIGHT, DENSITY, Param("normalize", kind=bool, default=False), LAMBDA,
              Param("rescale", kind=bool, default=False), INT8_MASK)

    def _drop(self, d: torch.Tensor, i: int, params: MethodParams) -> torch.Tensor:
        density = params.of("density", i)
        rescale = params.get("rescale")
        if self.drop == "magnitude":
            return sparsify.magnitude(d, density, rescale)
        if self.drop == "outliers":
            return sparsify.magnitude_outliers(d, density, params.of("gamma", i), rescale)
        if self.drop == "random":
            return sparsify.bernoulli(d, density, rng_for(params, i, d.device), rescale)
        if self.drop == "della":
            return sparsify.della_magprune(d, params.shape, density, params.of("epsilon", i),
                                           rng_for(params, i, d.device), rescale)
        return d

    def _streamed(self, params: MethodParams, base: torch.Tensor) -> bool:
        """Whether :meth:`_streamed_masks` applies: a magnitude or breadcrumbs drop without
        rescaling, in float32 on the CPU (the others keep one float32 delta per model)."""
        import torch

        return (self.drop in ("magnitude", "outliers") and params.compute == "float32" and not params.get("rescale")
                and base.device.type == "cpu" and base.dtype != torch.float64 and base.numel() > 0)

    def _streamed_drop(self, params: MethodParams, base: torch.Tensor) -> bool:
        """Whether the blocked paths apply: no drop (task_arithmetic) or a random one (dare,
        della), on the CPU, in float32 or a half compute dtype."""
        rows = params.shape[0] if params.shape is not None and len(params.shape) >= 2 else 1
        return (self.drop in (None, "random", "della") and base.device.type == "cpu" and base.numel() > 0
                and params.compute in ("float32", "bfloat16", "float16")
                and (self.drop != "della" or base.numel() % max(rows, 1) == 0))  # else the reshape's error

    def _streamed_masks(self, tensors: Sequence[torch.Tensor], base: torch.Tensor, params: MethodParams) -> torch.Tensor:
        """The magnitude and breadcrumbs drops in float32, holding one boolean mask per model
        instead of one float32 delta per model.

        Per model, |x_i - b| is ranked as torch's sort ranks it (it is consumed) for the mask of
        kept entries; then, in column blocks, each delta is recomputed from the inputs, masked,
        weighted, elected and summed: every value and every sum is the one the whole-tensor
        computation gives (each column is reduced on its own), so the result is the same bit for
        bit, whichever thread mixes which columns."""
        import torch

        n = base.numel()
        half = tensors[0].dtype in (torch.bfloat16, torch.float16)

        def magnitudes(i: int) -> torch.Tensor:
            keys = SPARES.take(n, torch.float32)
            keys.copy_(tensors[i])
            return keys.sub_(base).abs_()

        def keep(i: int) -> torch.Tensor | None:
            density = params.of("density", i)
            if density >= 1:
                return None
            if self.drop == "outliers":
                return sparsify.outlier_mask(lambda: magnitudes(i), n, density, params.of("gamma", i))
            keys = magnitudes(i)
            mask = sparsify.top_k_mask(keys, sparsify.kept_count(n, density), lambda: magnitudes(i),
                                       select_first=not half)
            SPARES.give(keys)
            return mask

        models = range(len(tensors))
        if n > SPARES.limit:
            # A large tensor: what small ones left is dropped before its working set, and its
            # models are ranked one after the other (a ranking holds about 12 bytes per entry:
            # the two 33M-entry tables of a 0.25B Llama in pairs raised peak RSS by 35%).
            SPARES.clear()
            masks = [keep(i) for i in models]
        else:  # the models' rankings are independent and mostly single-threaded: two at once
            masks = list(pool().map(keep, models))
        out = self._mix_streamed(tensors, base, params, masks, [None] * len(masks), None)
        for mask in masks:
            if mask is not None:
                SPARES.give(mask)
        return out

    def _mix_streamed(self, tensors: Sequence[torch.Tensor], base: torch.Tensor, params: MethodParams,
                      masks: Sequence[torch.Tensor | None], factors: Sequence[torch.Tensor | None],
                      out: torch.Tensor | None) -> torch.Tensor:
        """``base + mix(drop(x_i - base))`` in column blocks on two threads, each delta recomputed
        from the inputs in the compute dtype, then (in the drop's work dtype) masked and scaled
        by its rescale factor as the whole-tensor drop does, and mixed by :meth:`_mix`: every
        value and every column sum is the whole-tensor computation's, whichever thread mixes
        which columns. ``out`` (float32, at least as long) is written when the compute dtype is
        float32."""
        import torch

        n = base.numel()
        cdt = compute_dtype(params)
        work = random_drops.work_dtype(cdt)
        if out is None or cdt != torch.float32:
            out = torch.empty(n, dtype=cdt)
        out = out[:n]
        weights = torch.tensor(params.weights, dtype=cdt).unsqueeze(-1)  # (N, 1)

        def mix_columns(start: int, stop: int) -> None:
            c = min(stop - start, _COLUMNS)
            d = torch.empty((len(tensors), c), dtype=cdt)
            b = torch.empty(c, dtype=cdt)
            w = torch.empty(c, dtype=work) if work != cdt else None
            ones = torch.empty(c, dtype=work)
            for s in range(start, stop, _COLUMNS):
                e = min(stop, s + _COLUMNS)
                blk = d[:, : e - s]
                bc = random_drops.in_compute(base[s:e], cdt, b)
                for i, x in enumerate(tensors):
                    row = blk[i]
                    row.copy_(x[s:e])
                    row.sub_(bc)
                    mask, factor = masks[i], factors[i]
                    if mask is None:
                        continue
                    kept = row if w is None else w[: e - s].copy_(row)
                    kept.mul_(random_drops.as_factor(mask[s:e], ones))
                    if factor is not None:
                        kept.mul_(factor)
                    if kept is not row:
                        row.copy_(kept)
                torch.add(bc, self._mix(blk, weights, params), out=out[s:e])

        # Columns are reduced independently, so two threads mixing halves give the same bits;
        # small ops on 64Ki-column blocks run on one core each, so one thread leaves a core idle.
        in_halves(n, _COLUMNS, mix_columns)
        return out

    def _streamed_random(self, tensors: Sequence[torch.Tensor], base: torch.Tensor,
                         params: MethodParams) -> torch.Tensor:
        """DARE's and DELLA's drops holding one boolean mask per model and a rescale factor
        (:mod:`~paperlab.soup.methods.random_drops`) instead of one float delta per model;
        the same draws, the same kept entries, the same values bit for bit."""
        drops = random_drops.model_drops(tensors, base, params, "della" if self.drop == "della" else "random")
        out = self._mix_streamed(tensors, base, params, [m for m, _ in drops], [f for _, f in drops], None)
        for mask, _ in drops:
            if mask is not None:
                SPARES.give(mask)
        return out

    def _mix(self, deltas: torch.Tensor, weights: torch.Tensor, params: MethodParams) -> torch.Tensor:
        """The columns of ``deltas`` (N, c: the models' task vectors after their drop; weighted
        in place) mixed into one (c,): weighted, sign-elected where the method elects, summed,
        divided by the weights that took part (``normalize``) and scaled by lambda. Every column
        is reduced on its own, so any column block gives the whole tensor's bits."""
        import torch

        deltas.mul_(weights)
        if self.consensus:
            m = elect(deltas, params.get("int8_mask"))
            # The mask as 1/0 in the deltas' dtype (mergekit's mask dtype holds the same values),
            # read as bytes: torch multiplies by a bool mask one element at a time.
            ones = torch.empty(m.shape, dtype=deltas.dtype, device=m.device).copy_(m.view(torch.uint8))
            deltas.mul_(ones)  # a 0/1 mask changes no value it keeps
            divisor = (weights * ones).sum(dim=0)
            divisor.masked_fill_(divisor == 0, 1)
        else:
            divisor = weights.sum(dim=0)
            divisor[divisor.abs() < 1e-8] = 1
        mixed = deltas.sum(dim=0)
        if params.get("normalize"):
            mixed /= divisor
        if params.get("lambda") != 1:
            mixed *= params.get("lambda")
        return mixed

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        assert base is not None  # validated before any work
        if self._streamed(params, base):
            return self._streamed_masks(tensors, base, params)
        if self._streamed_drop(params, base):
            return self._streamed_random(tensors, base, params) if self.drop else \
                self._mix_streamed(tensors, base, params, [None] * len(tensors), [None] * len(tensors), out)
        b = load(base, params)
        deltas = torch.empty((len(tensors), b.numel()), dtype=b.dtype, device=b.device)  # (N, n)
        for i, x in enumerate(tensors):
            row = deltas[i]
            row.copy_(x)  # x in the compute dtype, then x - b, in place: mergekit's values, no copy
            d = self._drop(row.sub_(b), i, params)
            if d is not row:
                row.copy_(d)
            del d
        weights = torch.tensor(params.weights, dtype=b.dtype, device=b.device).unsqueeze(-1)  # (N, 1)
        for s in range(0, b.numel(), _COLUMNS):  # temporaries of N x 64Ki, not N x n
            b[s: s + _COLUMNS].add_(self._mix(deltas[:, s: s + _COLUMNS], weights, params))
        return b


@register_method
class TaskArithmetic(TaskVectorMethod):
    """theta = base + lambda * sum_i w_i (x_i - base) (Ilharco et al. 2023); elementwise."""

    name = mergekit = "task_arithmetic"
    elementwise = True  # density is accepted (mergekit's configs give it) and has no effect
    reads_only = True  # every input block is copied into the compute dtype before any arithmetic


@register_method
class Ties(TaskVectorMethod):
    """TIES-merging (Yadav et al. 2023): magnitude trim, sign election, disjoint mean."""

    name = mergekit = "ties"
    consensus = True
    drop = "magnitude"
    params: ClassVar[tuple[Param, ...]] = (WEIGHT, DENSITY, Param("normalize", kind=bool, default=True), LAMBDA,
              Param("rescale", kind=bool, default=False), INT8_MASK)


@register_method
class DareLinear(TaskVectorMethod):
    """DARE (Yu et al. 2024): random drop with L1 rescale, then a weighted sum of task vectors."""

    name = mergekit = "dare_linear"
    drop = "random"
    reads_only = True  # inputs are only read: copied into blocks, never written
    params: ClassVar[tuple[Param, ...]] = (WEIGHT, DENSITY, Param("normalize", kind=bool, default=False), LAMBDA,
              Param("rescale", kind=bool, default=True), INT8_MASK)


@register_method
class DareTies(DareLinear):
    """DARE's random drop followed by TIES's sign election."""

    name = mergekit = "dare_ties"
    consensus = True


GAMMA = Param("gamma", per_model=True, default=0.01, low=0.0, high=1.0, fix="the share of largest entries dropped")


@register_method
class Breadcrumbs(TaskVectorMethod):
    """Model Breadcrumbs (Davari & Belilovsky 2023): drop the largest outliers and the smallest."""

    name = mergekit = "breadcrumbs"
    drop = "outliers"
    params: ClassVar[tuple[Param, ...]] = (*TaskVectorMethod.params, GAMMA)
    # The band's replays allocate and free position lists of up to tens of MB at every
    # partition level; mapped afresh, each is faulted in page by page. Reusing blocks under
    # 16 MiB from the heap: 3 x 0.25B bf16, 30.8 -> 24.3-25.2 s (system time 18.8 -> 9.3-10.2 s),
    # peak RSS 1153 -> 1276-1325 MB; 64 MiB gave 20.7 s but 1502 MB.
    system_blocks = 1 << 24


@register_method
class BreadcrumbsTies(Breadcrumbs):
    """Breadcrumbs' drop followed by TIES's sign election."""

    name = mergekit = "breadcrumbs_ties"
    consensus = True


@register_method
class Della(TaskVectorMethod):
    """DELLA (Deep et al. 2024): drop by magnitude rank (MagPrune), L1 rescale, sign election."""

    name = mergekit = "della"
    consensus = True
    drop = "della"
    reads_only = True  # inputs are only read: copied into blocks, never written
    params: ClassVar[tuple[Param, ...]] = (WEIGHT, DENSITY, Param("normalize", kind=bool, default=True), LAMBDA,
              Param("rescale", kind=bool, default=True), INT8_MASK,
              Param("epsilon", per_model=True, default=0.15, low=0.0, high=1.0, open_low=False))

    def check_values(self, values: Mapping[str, Any], per_model: Mapping[str, tuple[Any, ...]], where: str) -> None:
        for d, e in zip(per_model["density"], per_model["epsilon"], strict=True):
            if d < 1 and not (d - e > 0 and d + e < 1):
                raise MergeConfigError(f"della needs 0 < density - epsilon and density + epsilon < 1; {where} has "
                                       f"density {d} and epsilon {e}: lower epsilon")


@register_method
class DellaLinear(Della):
    """DELLA's drop with a plain weighted sum (no sign election)."""

    name = mergekit = "della_linear"
    consensus = False
    params: ClassVar[tuple[Param, ...]] = (WEIGHT, DENSITY, Param("normalize", kind=bool, default=False), LAMBDA,
              Param("rescale", kind=bool, default=True), INT8_MASK,
              Param("epsilon", per_model=True, default=0.15, low=0.0, high=1.0))
