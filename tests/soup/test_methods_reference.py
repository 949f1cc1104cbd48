"""Every merge method against a float64 re-derivation written here, from mergekit's semantics.

The references below are written from the method descriptions (docs/soup.md), in float64, on
the same real tiny checkpoints; our engine computes in float32 and writes float32, so agreement
is to float32 rounding (rtol 1e-5). Random drops are re-derived from the documented generator:
torch.Generator seeded with the first 8 bytes (little-endian, top bit cleared) of
sha256("SEED:TENSOR_NAME:MODEL_INDEX"), one torch.rand(n) draw per model, keep where u < p.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from paperlab.soup.config import load_merge_config
from paperlab.soup.merge import merge
from paperlab.soup.methods import MethodParams, get_method

F64 = torch.float64


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, make_llama_fn: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ref")
    return {n: make_llama_fn(root / n, s, layers=3) for n, s in (("a", 11), ("b", 12), ("c", 13), ("base", 14))}


def run(models: dict[str, Path], tmp_path: Path, text: str) -> dict[str, torch.Tensor]:
    for k, p in models.items():
        text = text.replace(f"@{k}", str(p))
    (tmp_path / "m.yml").write_text(text + "dtype: float32\n")
    merge(load_merge_config(tmp_path / "m.yml"), tmp_path / "out")
    return load_dir(tmp_path / "out")


def layer_t(name: str, n_layers: int = 3) -> float:
    m = re.search(r"layers\.(\d+)\.", name)
    return 0.0 if m is None else int(m.group(1)) / (n_layers - 1)


def grad(values: list[float], t: float) -> float:
    s = t * (len(values) - 1)
    i0 = int(s)
    i1 = min(len(values) - 1, i0 + 1)
    return (1 - (s - i0)) * values[i0] + (s - i0) * values[i1]


def uniform_draw(seed: int, name: str, i: int, n: int) -> torch.Tensor:
    g = torch.Generator()
    g.manual_seed(int.from_bytes(hashlib.sha256(f"{seed}:{name}:{i}".encode()).digest()[:8], "little") & (2**63 - 1))
    return torch.rand(n, generator=g, dtype=torch.float32).to(F64)


def top_k_mask(d: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.argsort(d.float().abs(), descending=True, stable=True)
    m = torch.zeros_like(d)
    m[order[:k]] = 1
    return m


def l1(d: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    before, after = float(d.abs().sum()), float(kept.abs().sum())
    return kept if before < 1e-7 or after < 1e-7 else kept * (before / after)


def task_vector_ref(xs: list[torch.Tensor], b: torch.Tensor, ws: list[float], drops: list[torch.Tensor],
                    *, consensus: bool, normalize: bool, lam: float) -> torch.Tensor:
    deltas = [d * w for d, w in zip(drops, ws, strict=True)]
    if consensus:
        s = torch.where(sum(deltas) >= 0, 1.0, -1.0).to(F64)  # type: ignore[arg-type]
        masks = [(torch.sign(d) == s).to(F64) for d in deltas]
        mixed = sum(d * m for d, m in zip(deltas, masks, strict=True))
        div = sum(w * m for w, m in zip(ws, masks, strict=True))
        div = torch.where(div == 0, 1.0, div)  # type: ignore[arg-type]
    else:
        mixed = sum(deltas)
        tw = sum(ws)
        div = torch.tensor(1.0 if abs(tw) < 1e-8 else tw, dtype=F64)
    if normalize:
        mixed = mixed / div
    return b + lam * mixed  # type: ignore[operator]


def close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for k in want:
        assert torch.allclose(got[k].to(F64), want[k].reshape(got[k].shape), rtol=1e-5, atol=1e-6), k


def states(models: dict[str, Path], *names: str) -> list[dict[str, torch.Tensor]]:
    return [{k: v.to(F64).reshape(-1) for k, v in load_dir(models[n]).items()} for n in names]


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_with_gradient_densities(models: dict[str, Path], tmp_path: Path, normalize: bool) -> None:
    got = run(models, tmp_path, "merge_method: ties\nbase_model: @base\nmodels:\n"
              "  - model: @a\n    parameters: {weight: [1.0, 0.5], density: [0.8, 0.2]}\n"
              "  - model: @b\n    parameters: {weight: 0.7, density: 0.5}\n"
              "  - model: @c\n    parameters: {weight: -0.3, density: 0.9}\n"
              f"parameters: {{normalize: {str(normalize).lower()}, lambda: 0.9}}\n")
    a, b, c, base = states(models, "a", "b", "c", "base")
    want = {}
    for name, bt in base.items():
        t = layer_t(name)
        ws = [grad([1.0, 0.5], t), 0.7, -0.3]
        ds = [grad([0.8, 0.2], t), 0.5, 0.9]
        drops = []
        for x, d in zip((a, b, c), ds, strict=True):
            delta = x[name] - bt
            drops.append(delta * top_k_mask(delta, max(1, int(d * delta.numel()))) if d < 1 else delta)
        want[name] = task_vector_ref([a[name], b[name], c[name]], bt, ws, drops, consensus=True,
                                     normalize=normalize, lam=0.9)
    close(got, want)


def test_ties_sign_election_on_a_zero_sum_and_exact_k() -> None:
    ties = get_method("ties")
    base = torch.zeros(6)
    x1 = torch.tensor([1.0, -2.0, 3.0, 3.0, 3.0, 0.5])
    x2 = -x1  # every column sums to zero: mergekit elects +
    common = {"normalize": True, "lambda": 1.0, "rescale": False, "int8_mask": False}
    p = MethodParams((1.0, 1.0), common, {"density": (1.0, 1.0)}, shape=(6,))
    got = ties.combine([x1, x2], base, p)
    want = torch.where(x1 > 0, x1, -x1)  # the positive side wins each column, divided by its one weight
    assert torch.equal(got, want)
    # Three entries tie at the top: k = int(0.5 * 6) = 3 keeps exactly those three.
    q = MethodParams((1.0,), {**common, "normalize": False}, {"density": (0.5,)}, shape=(6,))
    kept = ties.combine([x1], base, q)
    assert kept.tolist() == [0.0, 0.0, 3.0, 3.0, 3.0, 0.0]
    # A tie straddling the cut (k = int(0.4 * 6) = 2 of three 3.0s): exactly k are kept, the ones
    # a descending argsort puts first (mergekit's call).
    r = MethodParams((1.0,), {**common, "normalize": False}, {"density": (0.4,)}, shape=(6,))
    kept = ties.combine([x1], base, r)
    want = torch.zeros(6)
    first = torch.argsort(x1.abs(), descending=True)[:2]
    want[first] = x1[first]
    assert int((kept != 0).sum()) == 2 and torch.equal(kept, want)


@pytest.mark.parametrize("method,consensus", [("dare_linear", False), ("dare_ties", True)])
def test_dare_with_the_documented_generator(models: dict[str, Path], tmp_path: Path, method: str,
                                            consensus: bool) -> None:
    got = run(models, tmp_path, f"merge_method: {method}\nbase_model: @base\nmodels:\n"
              "  - model: @a\n    parameters: {weight: 0.6, density: 0.4}\n"
              "  - model: @b\n    parameters: {weight: 0.5, density: 0.7}\n"
              "paperlab: {seed: 7}\n")
    a, b, base = states(models, "a", "b", "base")
    want = {}
    for name, bt in base.items():
        drops = []
        for i, (x, d) in enumerate(((a, 0.4), (b, 0.7))):
            delta = x[name] - bt
            keep = (uniform_draw(7, name, i, delta.numel()) < d).to(F64)
            drops.append(l1(delta, delta * keep))
        want[name] = task_vector_ref([a[name], b[name]], bt, [0.6, 0.5], drops, consensus=consensus,
                                     normalize=False, lam=1.0)
    close(got, want)


def test_breadcrumbs_drops_outliers_and_the_smallest(models: dict[str, Path], tmp_path: Path) -> None:
    got = run(models, tmp_path, "merge_method: breadcrumbs\nbase_model: @base\nmodels:\n"
              "  - model: @a\n    parameters: {weight: 0.6, density: 0.8, gamma: 0.05}\n"
              "  - model: @b\n    parameters: {weight: 0.4, density: 0.5}\n")
    a, b, base = states(models, "a", "b", "base")
    want = {}
    for name, bt in base.items():
        drops = []
        for x, d, g in ((a, 0.8, 0.05), (b, 0.5, 0.01)):
            delta = x[name] - bt
            n = delta.numel()
            target, top = int(d * n), int(g * n)
            bottom = max(0, n - target - top)
            order = torch.argsort(delta.float().abs(), stable=True)
            m = torch.zeros_like(delta)
            m[order[bottom: bottom + target]] = 1
            drops.append(delta * m)
        want[name] = task_vector_ref([a[name], b[name]], bt, [0.6, 0.4], drops, consensus=False,
                                     normalize=False, lam=1.0)
    close(got, want)


def test_della_keeps_by_magnitude_rank(models: dict[str, Path], tmp_path: Path) -> None:
    got = run(models, tmp_path, "merge_method: della\nbase_model: @base\nmodels:\n"
              "  - model: @a\n    parameters: {weight: 1.0, density: 0.5, epsilon: 0.2}\n"
              "  - model: @b\n    parameters: {weight: 0.5, density: 0.6}\n"
              "parameters: {lambda: 1.1}\n")
    a, b, base = states(models, "a", "b", "base")
    shapes = {k: v.shape for k, v in load_dir(models["base"]).items()}
    want = {}
    for name, bt in base.items():
        drops = []
        for i, (x, d, e) in enumerate(((a, 0.5, 0.2), (b, 0.6, 0.15))):
            delta = x[name] - bt
            rows = shapes[name][0] if len(shapes[name]) >= 2 else 1
            mat = delta.reshape(rows, -1)
            cols = mat.shape[1]
            rank = torch.argsort(torch.argsort(mat.float().abs(), dim=1, stable=True), dim=1).to(F64)
            p = (d - e) + (rank / (cols - 1)) * 2 * e
            keep = (uniform_draw(0, name, i, delta.numel()) < p.reshape(-1)).to(F64)
            drops.append(l1(delta, delta * keep))
        want[name] = task_vector_ref([a[name], b[name]], bt, [1.0, 0.5], drops, consensus=True,
                                     normalize=True, lam=1.1)
    close(got, want)


def slerp_ref(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    na, nb = float(a.norm()), float(b.norm())
    dot = float((a / (na if na > 1e-8 else 1)).dot(b / (nb if nb > 1e-8 else 1)))
    dot = max(-1.0, min(1.0, dot))
    if abs(dot) > 0.9995:
        return (1 - t) * a + t * b
    th = math.acos(dot)
    return math.sin((1 - t) * th) / math.sin(th) * a + math.sin(t * th) / math.sin(th) * b


def test_slerp_with_filtered_gradients(models: dict[str, Path], tmp_path: Path) -> None:
    got = run(models, tmp_path, "merge_method: slerp\nbase_model: @a\nslices:\n  - sources:\n"
              "      - {model: @a, layer_range: [0, 3]}\n      - {model: @b, layer_range: [0, 3]}\n"
              "parameters:\n  t:\n    - {filter: self_attn, value: [0, 0.5, 0.3, 0.7, 1]}\n"
              "    - {filter: mlp, value: [1, 0.5]}\n    - value: 0.25\n")
    a, b = states(models, "a", "b")
    want = {}
    for name in a:
        t = layer_t(name)
        tv = (grad([0, 0.5, 0.3, 0.7, 1], t) if "self_attn" in name else grad([1, 0.5], t) if "mlp" in name else 0.25)
        want[name] = slerp_ref(tv, a[name], b[name])
    close(got, want)


def nuslerp_rows(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    u0 = v0 / v0.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / v1.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (u0 * u1).sum(-1, keepdim=True).clamp(-1, 1)
    th = torch.acos(cos)
    out = (torch.sin((1 - t) * th) * v0 + torch.sin(t * th) * v1) / torch.sin(th)
    return torch.where((1 - cos**2) <= 1e-16, (1 - t) * v0 + t * v1, out)


@pytest.mark.parametrize("extra,with_base", [("", False), ("", True), ("parameters: {nuslerp_flatten: false}\n", False)])
def test_nuslerp(models: dict[str, Path], tmp_path: Path, extra: str, with_base: bool) -> None:
    base_line = "base_model: @base\n" if with_base else ""
    got = run(models, tmp_path, f"merge_method: nuslerp\n{base_line}{extra}models:\n"
              "  - model: @a\n    parameters: {weight: 0.4}\n  - model: @b\n    parameters: {weight: 1.2}\n")
    a, b, base = states(models, "a", "b", "base")
    shapes = {k: v.shape for k, v in load_dir(models["base"]).items()}
    t = 1.2 / 1.6
    want = {}
    for name in a:
        x0, x1 = a[name], b[name]
        if with_base:
            x0, x1 = x0 - base[name], x1 - base[name]
        rows = shapes[name][0] if extra and len(shapes[name]) >= 2 else 1
        r = nuslerp_rows(t, x0.reshape(rows, -1), x1.reshape(rows, -1)).reshape(-1)
        want[name] = r + base[name] if with_base else r
    close(got, want)


@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock(models: dict[str, Path], tmp_path: Path, filter_wise: bool) -> None:
    got = run(models, tmp_path, f"merge_method: model_stock\nbase_model: @base\n"
              f"parameters: {{filter_wise: {str(filter_wise).lower()}}}\nmodels:\n  - model: @a\n  - model: @b\n  - model: @c\n")
    a, b, c, base = states(models, "a", "b", "c", "base")
    shapes = {k: v.shape for k, v in load_dir(models["base"]).items()}
    want = {}
    for name, w0 in base.items():
        rows = shapes[name][0] if filter_wise and len(shapes[name]) >= 2 else 1
        w0m = w0.reshape(rows, -1)
        ws = [x[name].reshape(rows, -1) for x in (a, b, c)]
        offs = [w - w0m for w in ws]
        cos = [((offs[i] * offs[j]).sum(-1) / (offs[i].norm(dim=-1) * offs[j].norm(dim=-1)).clamp(min=1e-6)).clamp(-1, 1)
               for i in range(3) for j in range(i + 1, 3)]
        cm = torch.stack(cos).mean(0).unsqueeze(-1)
        t = 3 * cm / (1 + 2 * cm)
        want[name] = (t * sum(ws) / 3 + (1 - t) * w0m).reshape(-1)
    close(got, want)


def test_task_arithmetic_and_linear(models: dict[str, Path], tmp_path: Path) -> None:
    got = run(models, tmp_path, "merge_method: task_arithmetic\nbase_model: @base\nmodels:\n"
              "  - model: @a\n    parameters:\n      weight: [{filter: mlp, value: 0.5}, {value: 0.2}]\n"
              "  - model: @b\n    parameters: {weight: -0.4}\nparameters: {lambda: 0.8}\n")
    a, b, base = states(models, "a", "b", "base")
    want = {}
    for name, bt in base.items():
        w = 0.5 if "mlp" in name else 0.2
        want[name] = bt + 0.8 * (w * (a[name] - bt) - 0.4 * (b[name] - bt))
    close(got, want)
