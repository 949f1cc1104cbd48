"""Compute dtype: float32 by default with one notice when the YAML asks for less, and
``--compute-dtype yaml`` to compute as mergekit does in the YAML's dtype (its bits; the
bit-for-bit comparison with mergekit itself is bench/soup/vs_mergekit.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from paperlab.soup.cli import app
from paperlab.soup.config import load_merge_config
from paperlab.soup.merge import merge


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory, make_llama_fn: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cd")
    return {n: make_llama_fn(root / n, s, dtype="bfloat16", tokenizer=False)
            for n, s in (("a", 31), ("b", 32), ("base", 33))}


def cfg(trio: dict[str, Path], tmp_path: Path, method: str) -> Path:
    text = (f"merge_method: {method}\ndtype: float16\n" + (f"base_model: {trio['base']}\n" if method == "ties" else "")
            + f"models:\n  - model: {trio['a']}\n    parameters: {{weight: 0.7, density: 0.5}}\n"
            f"  - model: {trio['b']}\n    parameters: {{weight: 0.3, density: 0.5}}\n")
    if method == "linear":
        text = text.replace(", density: 0.5", "")
    (tmp_path / f"{method}.yml").write_text(text)
    return tmp_path / f"{method}.yml"


def test_default_is_float32_with_one_notice(trio: dict[str, Path], tmp_path: Path) -> None:
    result = merge(load_merge_config(cfg(trio, tmp_path, "linear")), tmp_path / "out")
    notes = [n for n in result.notes if "compute dtype" in n]
    assert len(notes) == 1 and "--compute-dtype yaml" in notes[0]
    a, b = load_file(trio["a"] / "model.safetensors"), load_file(trio["b"] / "model.safetensors")
    got = load_file(tmp_path / "out" / "model.safetensors")
    n = "model.layers.0.mlp.up_proj.weight"
    assert got[n].dtype == torch.float16
    assert torch.equal(got[n], (a[n].float() * 0.7).add(b[n].float(), alpha=0.3).half())


def test_yaml_linear_rounds_the_inputs_and_the_sum_to_float16_as_mergekit(trio: dict[str, Path], tmp_path: Path) -> None:
    merge(load_merge_config(cfg(trio, tmp_path, "linear"), compute_dtype="yaml"), tmp_path / "out")
    a, b = load_file(trio["a"] / "model.safetensors"), load_file(trio["b"] / "model.safetensors")
    got = load_file(tmp_path / "out" / "model.safetensors")
    n = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(got[n], (a[n].half().float() * 0.7).add(b[n].half().float(), alpha=0.3).half())


def test_yaml_ties_computes_in_float16(trio: dict[str, Path], tmp_path: Path) -> None:
    merge(load_merge_config(cfg(trio, tmp_path, "ties")), tmp_path / "f32")
    merge(load_merge_config(cfg(trio, tmp_path, "ties"), compute_dtype="yaml"), tmp_path / "f16")
    x, y = load_file(tmp_path / "f32" / "model.safetensors"), load_file(tmp_path / "f16" / "model.safetensors")
    differ = sum(int((x[k] != y[k]).sum()) for k in x) / sum(v.numel() for v in x.values())
    assert 0.01 < differ < 0.9  # float16 arithmetic rounds differently, and not everywhere


def test_cli_flag_in_process(trio: dict[str, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["merge", str(cfg(trio, tmp_path, "linear")), str(tmp_path / "o"), "--quiet",
                                 "--compute-dtype", "yaml", "--lazy-unpickle", "-j", "2"])
    assert r.exit_code == 0, r.output
    assert "no effect here: --lazy-unpickle (reads are always lazy)" in r.output and "--num-threads" in r.output
    r = CliRunner().invoke(app, ["merge", str(cfg(trio, tmp_path, "linear")), str(tmp_path / "p"), "--compute-dtype",
                                 "float8"])
    assert r.exit_code != 0 and not (tmp_path / "p").exists()


def test_device_without_that_device_is_one_line(trio: dict[str, Path], tmp_path: Path, soup_cli) -> None:  # type: ignore[no-untyped-def]
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the GPU path runs instead")
    r = soup_cli("merge", str(cfg(trio, tmp_path, "linear")), str(tmp_path / "o"), "--cuda")
    assert r.returncode == 2 and "--device cuda: no such device here" in r.stderr
    assert not (tmp_path / "o").exists()
    r = soup_cli("merge", str(cfg(trio, tmp_path, "linear")), str(tmp_path / "o"), "--device", "tpu")
    assert r.returncode == 2 and "unknown device 'tpu'" in r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_merge_equals_the_cpu_merge(trio: dict[str, Path], tmp_path: Path) -> None:
    merge(load_merge_config(cfg(trio, tmp_path, "ties")), tmp_path / "cpu")
    merge(load_merge_config(cfg(trio, tmp_path, "ties"), device="cuda"), tmp_path / "gpu")
    a, b = load_file(tmp_path / "cpu" / "model.safetensors"), load_file(tmp_path / "gpu" / "model.safetensors")
    close = sum(int(torch.isclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-3).sum()) for k in a)
    assert close / sum(v.numel() for v in a.values()) > 0.999
