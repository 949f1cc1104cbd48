"""sce, multislerp, karcher, nearswap, arcee_fusion, ram and ramplus_tl against float64
re-derivations written here from their documented semantics (docs/soup.md, the modules'
docstrings); then each through a real YAML merge, and their bad parameters.

Our engine computes in float32, so agreement with the float64 references is to float32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from paperlab.soup.config import load_merge_config
from paperlab.soup.errors import MergeConfigError, SoupError, WeightsError
from paperlab.soup.merge import merge
from paperlab.soup.methods import MethodParams, get_method

F64 = torch.float64


def close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.to(F64), want, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def xs() -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(12, 10, generator=g) * 0.1
    models = [base + torch.randn(12, 10, generator=g) * 0.02 * (i + 1) for i in range(3)]
    # Sparse task vectors too (what RAM is for): each model changes a few entries only.
    for i, m in enumerate(models):
        keep = torch.rand(12, 10, generator=g) < 0.4 + 0.1 * i
        m.copy_(torch.where(keep, m, base))
    return [m.reshape(-1) for m in models], base.reshape(-1)


def params(method: str, weights: tuple[float, ...] = (), shape: tuple[int, ...] = (12, 10), **shared: object) -> MethodParams:
    m = get_method(method)
    values = {p.name: p.default for p in m.params if not p.per_model}
    values.update(shared)
    n = len(weights) if weights else 3
    return MethodParams(m.resolve(weights or None, n, normalize=False), values, {}, shape, "t", 0)


def elect64(d: torch.Tensor) -> torch.Tensor:
    s = torch.where(d.sum(0) >= 0, 1.0, -1.0).to(F64)
    return (torch.sign(d) == s).to(F64)


@pytest.mark.parametrize("topk", [1.0, 0.5])
def test_sce(xs: tuple[list[torch.Tensor], torch.Tensor], topk: float) -> None:
    models, base = xs
    d = torch.stack([m.to(F64) - base.to(F64) for m in models])
    if topk < 1:
        var = d.var(0, unbiased=False)
        k = int(int((var != 0).sum()) * topk)
        keep = torch.zeros_like(var)
        keep[torch.argsort(var, descending=True)[:k]] = 1
        d = d * keep
    w = (d**2).mean(1)
    w = w / w.sum()
    ew = w[:, None] * elect64(d)
    want = base.to(F64) + (d * ew).sum(0) / ew.sum(0).clamp(min=1e-6)
    close(get_method("sce").combine(models, base, params("sce", select_topk=topk)), want)


def slerp_mean64(units: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    mean = (units * w[:, None]).sum(0)
    mean = mean / mean.norm()
    tangent = units - (units @ mean)[:, None] * mean
    v = (tangent * w[:, None]).sum(0)
    vn = v.norm()
    return mean * torch.cos(vn) + v * (torch.sin(vn) / vn)


@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp(xs: tuple[list[torch.Tensor], torch.Tensor], with_base: bool) -> None:
    models, base = xs
    x = torch.stack([m.to(F64) - (base.to(F64) if with_base else 0) for m in models])
    w = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    norms = x.norm(dim=1)
    want = slerp_mean64(x / norms[:, None], w) * (norms * w).sum() + (base.to(F64) if with_base else 0)
    got = get_method("multislerp").combine(models, base if with_base else None, params("multislerp", (0.5, 0.3, 0.2)))
    close(got, want)


def test_multislerp_antipodal_pair_falls_back_to_the_weighted_sum_and_three_is_an_error() -> None:
    a = torch.tensor([1.0, 2.0, -1.0])
    got = get_method("multislerp").combine([a, -a], None, params("multislerp", (0.5, 0.5), shape=(3,)))
    assert torch.equal(got, a * 0.5 + (-a) * 0.5)
    with pytest.raises(WeightsError, match="weighted mean direction .* is zero"):
        get_method("multislerp").combine([a, -a, a * 0], None, params("multislerp", (0.5, 0.5, 0.0), shape=(3,)))


def karcher64(xs: list[torch.Tensor], iters: int = 200) -> torch.Tensor:
    x = [t.to(F64) for t in xs]
    norms = [t.norm() for t in x]
    units = [t / n for t, n in zip(x, norms, strict=True)]
    mean = sum(units) / len(units)
    mean = mean / mean.norm()
    for _ in range(iters):
        tangent = torch.zeros_like(mean)
        for u in units:
            c = torch.clamp(mean @ u, -1, 1)
            th = torch.arccos(c)
            if th > 1e-12:
                tangent += (th / torch.sin(th)) * (u - c * mean) / len(units)
        tn = tangent.norm()
        if tn < 1e-12:
            break
        mean = torch.cos(tn) * mean + torch.sin(tn) * tangent / tn
        mean = mean / mean.norm()
    return mean * sum(norms) / len(norms)


def test_karcher_reaches_the_riemannian_mean(xs: tuple[list[torch.Tensor], torch.Tensor]) -> None:
    models, _ = xs
    got = get_method("karcher").combine(models, None, params("karcher", max_iter=50, tol=1e-7))
    close(got, karcher64(models), rtol=1e-4, atol=1e-6)


def test_nearswap(xs: tuple[list[torch.Tensor], torch.Tensor]) -> None:
    models, base = xs
    a, b, t = base.to(F64), models[0].to(F64), 0.01
    w = (t / (a - b).abs().clamp(min=1e-6)).clamp(0, 1)
    close(get_method("nearswap").combine(models[:1], base, params("nearswap", (), t=t)), w * b + (1 - w) * a)


def fusion64(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    p, q = torch.softmax(x, -1) + 1e-8, torch.softmax(b, -1) + 1e-8
    imp = (x - b).abs() * (p * torch.log(p / q)).sum(-1, keepdim=True)
    s = torch.sort(imp.reshape(-1)).values
    q1, med, q3 = (s[int(q * (s.numel() - 1))] for q in (0.25, 0.5, 0.75))
    return b + (x - b) * (imp >= med + 1.5 * (q3 - q1))


def test_arcee_fusion_keeps_the_important_changes(xs: tuple[list[torch.Tensor], torch.Tensor]) -> None:
    models, base = xs
    got = get_method("arcee_fusion").combine(models[:1], base, params("arcee_fusion", ()))
    want = fusion64(models[0].to(F64).reshape(12, 10), base.to(F64).reshape(12, 10)).reshape(-1)
    close(got, want)
    assert 0 < int((got != base).sum()) < int((models[0] != base).sum())  # some changes kept, not all


@pytest.mark.slow
def test_arcee_fusion_samples_large_tensors_reproducibly_with_the_right_statistics() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1100, 1000, generator=g)  # 1.1M entries: quantiles from a 1M sample
    x = base + torch.randn(1100, 1000, generator=g) * 0.1
    m = get_method("arcee_fusion")
    p = params("arcee_fusion", (), shape=(1100, 1000))
    a = m.combine([x.reshape(-1)], base.reshape(-1), p)
    assert torch.equal(a, m.combine([x.reshape(-1)], base.reshape(-1), p))  # seeded: reproducible
    exact = fusion64(x.to(F64), base.to(F64)).reshape(-1)
    kept, kept_exact = float((a != base.reshape(-1)).float().mean()), float((exact != base.reshape(-1).to(F64)).float().mean())
    assert abs(kept - kept_exact) < 0.002  # a sampled threshold keeps nearly the same share


def ram64(models: list[torch.Tensor], base: torch.Tensor, eps: float, r: float | None = None,
          alpha: float = 0.2) -> torch.Tensor:
    d = torch.stack([m.to(F64) - base.to(F64) for m in models])
    active = d.abs() > eps
    count = active.sum(0)
    unique, shared = (count == 1), (count > 1)
    lam = torch.ones(len(models), dtype=F64)
    if r is not None:
        rho = (active & shared).sum(1).to(F64) / (active & unique).sum(1).clamp(min=eps).to(F64)
        lam = 1 + r * rho.clamp(0, alpha)
    dz = d * active
    merged = (dz * unique * lam[:, None] + dz * shared / count.clamp(min=1)).sum(0)
    return base.to(F64) + merged


def test_ram_and_ramplus(xs: tuple[list[torch.Tensor], torch.Tensor]) -> None:
    models, base = xs
    close(get_method("ram").combine(models, base, params("ram", epsilon=1e-3)), ram64(models, base, 1e-3))
    got = get_method("ramplus_tl").combine(models, base, params("ramplus_tl", epsilon=1e-3, r=0.5, alpha=0.3))
    close(got, ram64(models, base, 1e-3, r=0.5, alpha=0.3))
    assert not torch.equal(got, get_method("ram").combine(models, base, params("ram", epsilon=1e-3)))


# Through a real YAML merge: parameters read from the file (numbers as YAML strings too).
YAMLS = {
    "sce": "merge_method: sce\nbase_model: @base\nparameters: {select_topk: 0.6}\nmodels: [{model: @a}, {model: @b}, {model: @c}]\n",
    "multislerp": "merge_method: multislerp\nmodels:\n  - {model: @a, parameters: {weight: 2}}\n  - {model: @b, parameters: {weight: 1}}\n",
    "karcher": "merge_method: karcher\nbase_model: @base\nparameters: {max_iter: 15}\nmodels: [{model: @a}, {model: @b}]\n",
    "nearswap": "merge_method: nearswap\nbase_model: @base\nparameters: {t: 0.001}\nmodels: [{model: @a}]\n",
    "arcee_fusion": "merge_method: arcee_fusion\nbase_model: @base\nmodels: [{model: @base}, {model: @a}]\n",
    "ram": "merge_method: ram\nbase_model: @base\nparameters: {epsilon: 1e-2}\nmodels: [{model: @a}, {model: @b}]\n",
    "ramplus_tl": "merge_method: ramplus_tl\nbase_model: @base\nparameters: {epsilon: 1e-2, r: 0.3}\nmodels: [{model: @a}, {model: @b}]\n",
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory, make_llama_fn: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("more")
    return {n: make_llama_fn(root / n, s, tokenizer=False) for n, s in (("a", 21), ("b", 22), ("c", 23), ("base", 24))}


def write(ckpts: dict[str, Path], tmp_path: Path, text: str) -> Path:
    for k, p in ckpts.items():
        text = text.replace(f"@{k}", str(p))
    (tmp_path / "m.yml").write_text(text)
    return tmp_path / "m.yml"


@pytest.mark.parametrize("method", sorted(YAMLS))
def test_yaml_merge_equals_the_method_on_each_tensor(method: str, ckpts: dict[str, Path], tmp_path: Path) -> None:
    spec = load_merge_config(write(ckpts, tmp_path, YAMLS[method]))
    merge(spec, tmp_path / "out")
    got = load_file(tmp_path / "out" / "model.safetensors")
    states = {k: load_file(p / "model.safetensors") for k, p in ckpts.items()}
    name = "model.layers.1.mlp.up_proj.weight"
    m = get_method(method)
    shared = {p.name: p.default for p in m.params if not p.per_model}
    shared.update({k: float(v) if isinstance(v, str) else v for k, v in spec.parameters.items()})
    order = [e.model for e in spec.models if e.model != spec.base_model or m.base == "input"]
    if m.base == "input" and spec.base_model:
        order.append(spec.base_model)
    inputs = [states[next(k for k, p in ckpts.items() if str(p) == ref)][name].reshape(-1) for ref in order]
    weights = tuple(float(e.parameters["weight"]) for e in spec.models) if m.takes_weights else None
    p = MethodParams(m.resolve(weights, len(inputs), normalize=False), shared, {}, got[name].shape, name, 0)
    base = states["base"][name].reshape(-1) if m.base in ("required", "optional") and spec.base_model else None
    assert torch.equal(got[name].reshape(-1), m.combine(inputs, base, p))


@pytest.mark.parametrize("method,params_text,match", [
    ("sce", "{select_topk: 0}", r"select_topk must be in \(0, 1\]"),
    ("sce", "{select_topk: 1.5}", r"select_topk must be in \(0, 1\]"),
    ("multislerp", "{eps: 0}", r"eps must be in \(0, inf\)"),
    ("karcher", "{max_iter: 0}", r"max_iter must be in \[1, inf\)"),
    ("karcher", "{max_iter: 2.5}", "max_iter must be a whole number"),
    ("karcher", "{tol: -1}", r"tol must be in \(0, inf\)"),
    ("nearswap", "{t: -0.1}", r"t must be in \[0, inf\)"),
    ("nearswap", "{}", "needs `t`"),
    ("ram", "{epsilon: -1}", r"epsilon must be in \[0, inf\)"),
    ("ramplus_tl", "{r: .nan}", "r must be a finite number"),
    ("ramplus_tl", "{alpha: -0.5}", r"alpha must be in \[0, inf\)"),
    ("arcee_fusion", "{t: 0.5}", "unsupported parameter.*arcee_fusion' takes no parameters"),
])
def test_bad_parameters_are_one_line_and_write_nothing(ckpts: dict[str, Path], tmp_path: Path, method: str,
                                                       params_text: str, match: str) -> None:
    models = "[{model: @a, parameters: {weight: 1}}, {model: @b, parameters: {weight: 1}}]" if method == "multislerp" \
        else "[{model: @a}]" if method in ("nearswap", "arcee_fusion") else "[{model: @a}, {model: @b}]"
    text = f"merge_method: {method}\nbase_model: @base\nparameters: {params_text}\nmodels: {models}\n"
    with pytest.raises((MergeConfigError, SoupError), match=match):
        merge(load_merge_config(write(ckpts, tmp_path, text)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_method_model_counts_are_checked(ckpts: dict[str, Path], tmp_path: Path) -> None:
    text = "merge_method: nearswap\nbase_model: @base\nparameters: {t: 0.1}\nmodels: [{model: @a}, {model: @b}]\n"
    with pytest.raises(WeightsError, match="'nearswap' takes exactly 1 model"):
        merge(load_merge_config(write(ckpts, tmp_path, text)), tmp_path / "out")
    text = "merge_method: sce\nmodels: [{model: @a}, {model: @b}]\n"
    with pytest.raises(WeightsError, match="'sce' needs a base model"):
        merge(load_merge_config(write(ckpts, tmp_path, text)), tmp_path / "out")


def test_every_mergekit_method_is_registered() -> None:
    from paperlab.soup.methods import METHODS

    mergekit = {"linear", "slerp", "nuslerp", "multislerp", "karcher", "task_arithmetic", "ties", "dare_linear",
                "dare_ties", "della", "della_linear", "breadcrumbs", "breadcrumbs_ties", "sce", "ram", "ramplus_tl",
                "model_stock", "nearswap", "arcee_fusion", "passthrough"}
    assert mergekit <= {m.mergekit for m in METHODS.values()}
    assert math.isclose(len(mergekit), 20)
