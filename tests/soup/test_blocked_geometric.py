"""multislerp, nuslerp and model_stock (its default, filter_wise false), whose elementwise steps run in cache-sized blocks on two
threads, against plain whole-tensor transcriptions of mergekit 0.1.5's code written here: bit for
bit in float32 and in the half dtypes, with one and with two intra-op threads (torch splits one
long reduction between its threads but hands a stack's rows out whole), on tensors of several
blocks with a ragged tail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from paperlab.soup.methods import MethodParams, get_method
from tests.soup.test_blocked_exact import N, inputs

COMPUTES = ["float32", "bfloat16", "float16"]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to the last bit, the sign of zero included (torch.equal takes -0.0 == 0.0)."""
    ints = {4: torch.int32, 2: torch.int16}
    return a.dtype == b.dtype and torch.equal(a.view(ints[a.element_size()]), b.view(ints[b.element_size()]))


def models(compute: str, count: int = 4) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The checkpoints' own bfloat16 tensors (a base-like one last) and the same in ``compute``,
    as mergekit loads them."""
    raw = inputs(torch.bfloat16, count)
    return raw, [x.to(getattr(torch, compute)) for x in raw]


def mparams(method: str, compute: str, weights: tuple[float, ...], **shared: object) -> MethodParams:
    m = get_method(method)
    values = {p.name: p.default for p in m.params if not p.per_model}
    values.update(shared)
    return MethodParams(weights, values, {}, (N,), "t", 0, compute)


def multislerp_whole(xs: list[torch.Tensor], base: torch.Tensor | None, weight: list[float],
                     normalize_weights: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """mergekit's multislerp, one whole-tensor operation at a time."""
    tensors = torch.stack(xs, dim=0)
    if base is not None:
        tensors -= base
    weights = torch.tensor(weight, dtype=tensors.dtype)
    if normalize_weights:
        weights = weights / weights.sum()
    norms = torch.norm(tensors, dim=-1, keepdim=True)
    unit_tensors = tensors / (norms + eps)
    mean = (unit_tensors * weights.view(-1, 1)).sum(0)
    mean = mean / torch.norm(mean)
    dots = (unit_tensors * mean).sum(-1, keepdim=True)
    tangent_vectors = unit_tensors - dots * mean
    tangent_result = (tangent_vectors * weights.view(-1, 1)).sum(0)
    tangent_norm = torch.norm(tangent_result) + eps
    result = mean * torch.cos(tangent_norm) + tangent_result * (torch.sin(tangent_norm) / tangent_norm)
    result = result * (norms.squeeze(-1) * weights).sum()
    return result if base is None else result + base


@pytest.mark.parametrize("compute", COMPUTES)
@pytest.mark.parametrize("with_base", [False, True], ids=["no_base", "base"])
def test_multislerp(compute: str, with_base: bool, threads: int) -> None:
    (*raw, rb), (*xs, b) = models(compute)
    weights = (0.5, 0.3, 0.2)
    got = get_method("multislerp").combine(raw, rb if with_base else None, mparams("multislerp", compute, weights))
    assert same_bits(got, multislerp_whole(xs, b if with_base else None, list(weights)))
    unnormalised = get_method("multislerp").combine(raw, None, mparams("multislerp", compute, (2.0, 1.0, 1.0),
                                                                       normalize_weights=False))
    assert same_bits(unnormalised, multislerp_whole(xs, None, [2.0, 1.0, 1.0], normalize_weights=False))


def nuslerp_whole(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """mergekit's nuslerp(flatten=True), one whole-tensor operation at a time."""
    v0_u = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    v1_u = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos_theta = torch.sum(v0_u * v1_u, dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos_theta.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))
    sin_theta = torch.sin(theta)
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin_theta
    return torch.where(colinear, (1 - t) * v0 + t * v1, result)


@pytest.mark.parametrize("compute", COMPUTES)
@pytest.mark.parametrize("with_base", [False, True], ids=["no_base", "base"])
def test_nuslerp(compute: str, with_base: bool, threads: int) -> None:
    (r0, r1, rb), (x0, x1, b) = models(compute, 3)
    got = get_method("nuslerp").combine([r0, r1], rb if with_base else None, mparams("nuslerp", compute, (0.7, 0.3)))
    want = b + nuslerp_whole(0.3, x0 - b, x1 - b) if with_base else nuslerp_whole(0.3, x0, x1)
    assert same_bits(got, want)


@pytest.mark.parametrize("compute", COMPUTES)
def test_nuslerp_colinear_pair_takes_the_straight_line(compute: str) -> None:
    r0 = torch.zeros(N, dtype=torch.bfloat16)
    r0[N - 7] = 0.5
    r1 = r0 * 2  # cos = 1 exactly: the spherical formula would divide by sin(0)
    x0, x1 = (r.to(getattr(torch, compute)) for r in (r0, r1))
    got = get_method("nuslerp").combine([r0, r1], None, mparams("nuslerp", compute, (0.5, 0.25)))
    assert same_bits(got, nuslerp_whole(0.25 / 0.75, x0, x1))
    assert got[N - 7] == 0.5 * (2 / 3) + 1.0 / 3


def model_stock_whole(w_0: torch.Tensor, ws: list[torch.Tensor]) -> torch.Tensor:
    """mergekit's model_stock (filter_wise false), one whole-tensor operation at a time."""
    offsets = [weight - w_0 for weight in ws]
    cos_thetas = []
    for idx, offset_a in enumerate(offsets):
        for offset_b in offsets[idx + 1:]:
            norm_product = torch.norm(offset_a, dim=-1) * torch.norm(offset_b, dim=-1)
            cos_thetas.append(((offset_a * offset_b).sum(dim=-1) / norm_product.clamp(min=1e-6)).clamp(-1, 1))
    cos_theta = torch.stack(cos_thetas).mean(dim=0).unsqueeze(-1)
    count = len(ws)
    denominator = 1 + (count - 1) * cos_theta
    singular = denominator.abs() < 1e-6
    safe_denominator = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos_theta), (count * cos_theta) / safe_denominator)
    average = sum(ws) / count
    assert isinstance(average, torch.Tensor)
    return t * average + (1 - t) * w_0


@pytest.mark.parametrize("compute", COMPUTES)
@pytest.mark.parametrize("count", [2, 3])
def test_model_stock(compute: str, count: int, threads: int) -> None:
    raw, xs = models(compute, count + 1)
    for x in [*raw, *xs]:  # every model -0.0 in one place: mergekit's sum(ws) starts from 0, so +0.0 there
        x[5] = -0.0
    got = get_method("model_stock").combine(raw[:count], raw[count], mparams("model_stock", compute, (0.5,) * count))
    assert same_bits(got, model_stock_whole(xs[count], xs[:count]))


@pytest.mark.parametrize("method,weights,shared", [
    ("multislerp", (0.5, 0.3, 0.2), {}), ("nuslerp", (0.5, 0.5), {}), ("nuslerp", (0.5, 0.5), {"nuslerp_flatten": False}),
    ("model_stock", (0.5, 0.5, 0.5), {}), ("model_stock", (0.5, 0.5, 0.5), {"filter_wise": True}),
])
@pytest.mark.parametrize("compute", ["float32", "bfloat16"])
def test_inputs_are_only_read(method: str, weights: tuple[float, ...], shared: dict[str, object], compute: str) -> None:
    """These methods declare ``reads_only``: the merge then hands them read-only views of the
    files' pages, where a write would crash the process."""
    raw, _ = models(compute, len(weights) + 1)
    kept = [x.clone() for x in raw]
    k = len(weights)
    get_method(method).combine(raw[:k], raw[k], mparams(method, compute, weights, **shared))
    if get_method(method).base == "optional":
        get_method(method).combine(raw[:k], None, mparams(method, compute, weights, **shared))
    assert all(same_bits(a, b) for a, b in zip(raw, kept, strict=True))
    assert get_method(method).reads_only


@pytest.mark.parametrize("method,weights", [("multislerp", (0.5, 0.3, 0.2)), ("nuslerp", (0.5, 0.5)),
                                            ("model_stock", (0.5, 0.5, 0.5))])
@pytest.mark.parametrize("compute", ["float32", "bfloat16"])
def test_result_goes_into_a_lent_buffer(method: str, weights: tuple[float, ...], compute: str) -> None:
    """``writes_out``: given a float32 buffer with room, the result is a view of its front (the
    merge lends one buffer for all tensors); the same bits as a fresh result."""
    raw, _ = models(compute, len(weights) + 1)
    k = len(weights)
    p = mparams(method, compute, weights)
    fresh = get_method(method).combine(raw[:k], raw[k], p)
    out = torch.full((N + 5,), float("nan"))
    lent = get_method(method).combine(raw[:k], raw[k], p, out=out)
    assert lent.data_ptr() == out.data_ptr()
    assert same_bits(lent, fresh)
    small = get_method(method).combine(raw[:k], raw[k], p, out=torch.empty(N // 3))  # no room: a new vector
    assert same_bits(small, fresh)
    assert get_method(method).writes_out


def test_reductions_do_not_follow_workers_started_under_another_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker thread keeps the intra-op thread count it started with; a float16 norm split
    between two threads has other bits than the serial one this thread computes at one."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from paperlab.soup.methods import base

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    workers = ThreadPoolExecutor(2)
    meet = threading.Barrier(2)

    def start(_: int) -> None:  # both workers run a parallel op at two threads
        meet.wait()
        torch.ones(1 << 20).sum()

    list(workers.map(start, range(2)))
    monkeypatch.setattr(base, "_POOL", workers)
    torch.set_num_threads(1)
    try:
        raw, xs = models("float16", 4)
        got = get_method("model_stock").combine(raw[:3], raw[3], mparams("model_stock", "float16", (0.5,) * 3))
        assert same_bits(got, model_stock_whole(xs[3], xs[:3]))
    finally:
        torch.set_num_threads(old)
        workers.shutdown()
