"""The merge engine's arithmetic: exact against direct torch computations, on real checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from paperlab.soup.config import MergeSpec
from paperlab.soup.memory import ExpertBank
from paperlab.soup.merge import merge


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def spec(paths: list[Path], weights: list[float] | None, **kw: object) -> MergeSpec:
    return MergeSpec(models=[{"model": str(p), "weight": w} for p, w in zip(paths, weights or [None] * len(paths), strict=False)], **kw)  # type: ignore[misc]


def direct_linear(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """The reference: sum_i w_i * x_i in float32, left to right, each multiply-add fused."""
    out = {}
    for name in states[0]:
        acc = states[0][name].float() * weights[0]
        for s, w in zip(states[1:], weights[1:], strict=False):
            acc = acc.add(s[name].float(), alpha=w)  # one rounding per multiply-add, as mergekit
        out[name] = acc
    return out


def test_fp32_linear_is_bit_exact_on_differently_sharded_inputs(three_llamas: list[Path], tmp_path: Path) -> None:
    weights = [0.5, 0.3, 0.2]
    merge(spec(three_llamas, weights, shard_size=40_000, chunk_elements=1000), tmp_path / "out")
    got = load_dir(tmp_path / "out")
    want = direct_linear([load_dir(p) for p in three_llamas], weights)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == torch.float32
        assert torch.equal(got[name], want[name]), name
    assert len(list((tmp_path / "out").glob("*.safetensors"))) > 1
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_bf16_within_one_ulp(llama_factory, tmp_path: Path) -> None:
    paths = [llama_factory(f"m{i}", 10 + i, dtype="bfloat16") for i in range(3)]
    weights = [0.2, 0.45, 0.35]
    merge(spec(paths, weights), tmp_path / "out")
    got = load_dir(tmp_path / "out")
    want = direct_linear([load_dir(p) for p in paths], weights)
    for name, t in got.items():
        assert t.dtype == torch.bfloat16
        assert ulp_distance(t, want[name].to(torch.bfloat16)).max() <= 1, name


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many bf16 steps apart two bf16 tensors are (on the ordered integer line)."""

    def ordered(x: torch.Tensor) -> torch.Tensor:
        i = x.view(torch.int16).to(torch.int32)
        return torch.where(i < 0, -32768 - i, i)  # negative floats count down from -0

    return (ordered(a) - ordered(b)).abs()


def test_output_loads_in_transformers_and_generates(three_llamas: list[Path], tmp_path: Path) -> None:
    merge(spec(three_llamas, [1, 1, 1]), tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert out.shape == (1, 9)


def test_tied_embeddings_merge_and_load(llama_factory, tmp_path: Path) -> None:
    paths = [llama_factory(f"t{i}", 20 + i, tied=True) for i in range(2)]
    merge(spec(paths, [0.5, 0.5]), tmp_path / "out")
    got = load_dir(tmp_path / "out")
    assert "lm_head.weight" not in got
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert torch.equal(model.model.embed_tokens.weight, got["model.embed_tokens.weight"])
    model.generate(torch.tensor([[1, 2]]), max_new_tokens=3, do_sample=False)


@pytest.mark.parametrize("method,extra", [
    ("linear", {}),
    ("uniform", {}),
    ("task_arithmetic", {"lambda": 0.7}),
    ("ties", {"density": 0.5, "lambda": 1.0}),
    ("dare_ties", {"density": 0.5}),
    ("breadcrumbs", {"density": 0.8}),
    ("della", {"density": 0.5}),
    ("model_stock", {}),
])
def test_in_memory_soup_equals_disk_soup(three_llamas: list[Path], llama_factory, tmp_path: Path,
                                         method: str, extra: dict) -> None:
    base = llama_factory("base", 99) if method not in ("linear", "uniform") else None
    weights = None if method in ("uniform", "model_stock") else [0.6, 0.3, 0.1]
    merge(spec(three_llamas, weights, method=method, base_model=str(base) if base else None,
               chunk_elements=777, parameters=extra), tmp_path / "disk")
    disk = AutoModelForCausalLM.from_pretrained(tmp_path / "disk")
    bank = ExpertBank(three_llamas, base=base)
    live = bank.load_model()
    bank.build_into(live, weights, method=method, scale=extra.get("lambda", 1.0), density=extra.get("density", 1.0))
    for (n, a), (_, b) in zip(sorted(disk.state_dict().items()), sorted(live.state_dict().items()), strict=False):
        assert torch.equal(a, b), n


def test_task_arithmetic_of_one_model_with_lambda_one_is_that_model(llama_factory) -> None:
    a, base = llama_factory("a", 1), llama_factory("base", 2)
    bank = ExpertBank([a], base=base)
    soup = bank.build([1.0], method="task_arithmetic")
    ref = load_dir(a)
    for n, t in soup.items():
        assert torch.allclose(t, ref[n], atol=1e-6), n


@settings(max_examples=25, deadline=None)
@given(w=st.lists(st.floats(0.01, 10.0), min_size=3, max_size=3), c=st.floats(0.1, 10.0))
def test_linear_normalisation_is_scale_invariant(three_llamas: list[Path], w: list[float], c: float) -> None:
    bank = _bank(three_llamas)
    a = bank.build(w)
    b = bank.build([x * c for x in w])
    for n in a:
        assert torch.allclose(a[n], b[n], rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(w=st.floats(0.0, 1.0))
def test_linear_merge_is_linear(three_llamas: list[Path], w: float) -> None:
    bank = _bank(three_llamas[:2])
    soup = bank.build([w, 1 - w] if w < 1 else [1.0, 0.0])
    x, y = bank.experts[0], bank.experts[1]
    for n, t in soup.items():
        want = (x[n] * w + y[n] * (1 - w)).reshape(t.shape)
        assert torch.allclose(t, want, rtol=1e-6, atol=1e-6), n


_BANKS: dict[tuple[str, ...], ExpertBank] = {}


def _bank(paths: list[Path]) -> ExpertBank:
    key = tuple(map(str, paths))
    if key not in _BANKS:
        _BANKS[key] = ExpertBank(paths)
    return _BANKS[key]
