"""task_arithmetic, dare_linear, dare_ties, della and della_linear, whose drops hold a boolean
mask and a rescale factor per model and whose deltas are recomputed and mixed in column blocks
on two threads, against a plain whole-tensor transcription of mergekit 0.1.5's
``generalized_task_arithmetic`` and ``sparsify`` written here, with the documented draws in
place of ``torch.bernoulli`` (``u = torch.rand(n)`` from ``rng_for``, keep where ``u < p``) and
DELLA's ranks from a stable sort: bit for bit, in float32 and in the half compute dtypes, on
tensors of several blocks and ranking steps with a ragged tail.
"""

from __future__ import annotations

import pytest
import torch

from paperlab.soup.methods import MethodParams, get_method, rng_for
from tests.soup.test_blocked_exact import N, inputs

ROWS, COLS = 389, 1021  # 397169 entries: six 64Ki-column blocks and a ragged tail; two ranking steps


def tensors(dtype: torch.dtype = torch.bfloat16, count: int = 3) -> list[torch.Tensor]:
    """The base first, then the models: bfloat16 values (as checkpoints hold), many tied in
    magnitude, so that DELLA's ranking has ties to break."""
    assert ROWS * COLS <= N
    return [x[: ROWS * COLS].clone() for x in inputs(dtype, count)]


def method_params(method: str, compute: str, densities: tuple[float, ...], shape: tuple[int, ...] = (ROWS, COLS),
                  **shared: object) -> MethodParams:
    m = get_method(method)
    values = {p.name: p.default for p in m.params if not p.per_model}
    values.update(shared)
    per: dict[str, tuple[float, ...]] = {"density": densities}
    if method.startswith("della"):
        per["epsilon"] = (0.15, 0.1, 0.2)[: len(densities)]
    weights = (0.7, 0.45, -0.2)[: len(densities)]
    return MethodParams(weights, values, per, shape, "model.layers.0.mlp.up_proj.weight", 11, compute)


def drop_whole(delta: torch.Tensor, method: str, p: MethodParams, i: int) -> torch.Tensor:
    """mergekit's bernoulli / della_magprune and rescaled_masked_tensor (L1), one whole-tensor
    operation at a time, with the documented draws."""
    density = p.of("density", i)
    if density >= 1:
        return delta
    work = torch.float32 if delta.dtype == torch.float16 else delta.dtype  # on the CPU
    u = torch.rand(delta.numel(), generator=rng_for(p, i), dtype=torch.float32)
    if method.startswith("dare"):
        mask = (u < density).to(work)
    else:
        eps = p.of("epsilon", i)
        assert p.shape is not None
        m = delta.reshape(p.shape[0], -1) if len(p.shape) >= 2 else delta.unsqueeze(0)
        ranks = torch.argsort(torch.argsort(m.abs(), dim=1, stable=True), dim=1).to(torch.float32) + 1
        lo = ranks.min(dim=1, keepdim=True).values
        hi = ranks.max(dim=1, keepdim=True).values
        rank_norm = ((ranks - lo) / (hi - lo)).clamp(0, 1)
        probs = (density - eps) + rank_norm * 2 * eps
        mask = (u < probs.reshape(-1)).to(work)
    t = delta.to(work)
    masked = t * mask
    if p.get("rescale"):
        before = t.abs().sum()
        after = masked.abs().sum()
        if not (before < 1e-7 or after < 1e-7):
            masked = masked * (before / after)
    return masked.to(delta.dtype)


def merge_whole(method: str, xs: list[torch.Tensor], base: torch.Tensor, p: MethodParams) -> torch.Tensor:
    """mergekit's GeneralizedTaskArithmeticMerge.merge_group in the compute dtype."""
    cdt = getattr(torch, p.compute)
    b = base.to(cdt)
    deltas = b.new_empty((len(xs), b.numel()))
    for i, x in enumerate(xs):
        delta = x.to(cdt) - b
        deltas[i] = drop_whole(delta, method, p, i) if method != "task_arithmetic" else delta
    weights = torch.tensor(p.weights, dtype=cdt).unsqueeze(-1)
    deltas.mul_(weights)
    if method in ("dare_ties", "della"):
        sign = deltas.sign().to(cdt)
        majority = (deltas.sum(dim=0) >= 0).to(cdt) * 2 - 1
        mask = sign == majority
        mixed = (deltas * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if p.get("normalize"):
        mixed /= divisor
    if p.get("lambda") != 1:
        mixed *= p.get("lambda")
    return (b + mixed).to(cdt)


def same(got: torch.Tensor, want: torch.Tensor) -> bool:
    return got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("compute", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("method", ["dare_linear", "dare_ties", "della", "della_linear"])
def test_random_drops_match_the_whole_tensor_computation(method: str, compute: str) -> None:
    base, *xs = tensors()
    p = method_params(method, compute, (0.4, 0.6))
    got = get_method(method).combine(xs, base, p)
    want = merge_whole(method, xs, base, p)
    assert same(got, want)
    assert not same(got, merge_whole(method, xs, base, method_params(method, compute, (0.6, 0.4))))


@pytest.mark.parametrize("method", ["dare_ties", "della_linear"])
def test_random_drops_without_rescale_and_with_a_model_kept_whole(method: str) -> None:
    base, *xs = tensors(count=4)
    xs[2] = base.clone()  # a zero task vector: both L1 norms are 0, the kept entries stay unscaled
    for compute in ("float32", "float16"):
        for shared in ({"rescale": False}, {"normalize": True, "lambda": 0.8}):
            p = method_params(method, compute, (0.5, 1.0, 0.3), **shared)
            assert same(get_method(method).combine(xs, base, p), merge_whole(method, xs, base, p))


def test_della_ranks_one_row_wider_than_a_ranking_step_and_many_short_rows() -> None:
    base, *xs = tensors()
    for shape in ((ROWS * COLS,), (1, ROWS * COLS), (COLS, ROWS)):
        p = method_params("della", "float32", (0.4, 0.6), shape=shape)
        assert same(get_method("della").combine(xs, base, p), merge_whole("della", xs, base, p))


@pytest.mark.parametrize("compute", ["float32", "bfloat16", "float16"])
def test_task_arithmetic_matches_the_whole_tensor_computation(compute: str) -> None:
    base, *xs = tensors(count=4)
    ta = get_method("task_arithmetic")
    for shared in ({}, {"normalize": True, "lambda": 0.6}):
        p = method_params("task_arithmetic", compute, (1.0, 1.0, 1.0), **shared)
        out = torch.full((ROWS * COLS + 5,), 7.0)  # the pipeline's float32 buffer, longer than the piece
        got = ta.combine(xs, base, p, out=out)
        assert same(got, merge_whole("task_arithmetic", xs, base, p))


def test_della_keep_probability_by_rank_is_mergekits_formula() -> None:
    """The per-rank table equals mergekit's probabilities for ranks 1..cols (a 1-ulp change
    would flip about one draw in 2^24, too rarely for the merges above to show)."""
    from paperlab.soup.methods.random_drops import rank_probabilities

    for cols in (2, 389, 1021, 4096):
        ranks = torch.arange(cols).to(torch.float32).unsqueeze(0) + 1
        lo = ranks.min(dim=1, keepdim=True).values
        hi = ranks.max(dim=1, keepdim=True).values
        for density, eps in ((0.5, 0.15), (0.4, 0.1), (0.3, 0.2), (0.61, 0.07)):
            want = (density - eps) + ((ranks - lo) / (hi - lo)).clamp(0, 1) * 2 * eps
            assert torch.equal(rank_probabilities(cols, density, eps), want[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sign_election_is_mergekits_on_zeros_infinities_nans_and_subnormals(dtype: torch.dtype) -> None:
    from paperlab.soup.methods.task_vectors import elect

    d = torch.randn(3, 3 * (1 << 16) + 7, generator=torch.Generator().manual_seed(2)).to(dtype)
    d[0, :50] = 0
    d[1, 10:20] = -0.0
    d[2, 30:40] = float("nan")
    d[1, 40:45] = float("inf")
    d[0, 45:50] = -float("inf")
    d[0, 60:70] = torch.finfo(dtype).tiny / 4
    d[1, 60:70] = -torch.finfo(dtype).tiny / 8
    d[:, 100:110] = 0
    for int8_mask in (False, True):  # mergekit's get_mask, method "sum"
        mask_dtype = torch.int8 if int8_mask else dtype
        majority = (d.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
        assert torch.equal(elect(d, int8_mask), d.sign().to(mask_dtype) == majority)


@pytest.mark.parametrize("numpy_draws", [True, False])
def test_block_draws_are_one_whole_torch_draw(numpy_draws: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from paperlab.soup.methods import random_drops

    monkeypatch.setattr(random_drops, "_NUMPY_MATCHES", None if numpy_draws else False)
    p = method_params("dare_linear", "float32", (0.5, 0.5))
    for i in range(3):
        want = torch.rand(300_001, generator=rng_for(p, i), dtype=torch.float32)
        draws = random_drops.Uniform(rng_for(p, i))
        assert (draws.state is not None) == numpy_draws
        got = torch.cat([draws.fill(torch.empty(k)) for k in (1, 65536, 99_999, 134_465)])
        assert torch.equal(got, want)
    if not numpy_draws:
        base, *xs = tensors()
        q = method_params("della", "bfloat16", (0.4, 0.6))
        assert same(get_method("della").combine(xs, base, q), merge_whole("della", xs, base, q))
