"""mergekit's YAML as published: every example shape we support runs unchanged but for its paths.

The fixtures under fixtures/mergekit/ are written in the shape of mergekit's examples/*.yml
(same keys, same structure); MODEL_*/DEEP_* stand for model paths and are replaced here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from paperlab.soup.config import load_merge_config
from paperlab.soup.errors import MergeConfigError, SoupError
from paperlab.soup.merge import merge

FIXTURES = Path(__file__).parent / "fixtures" / "mergekit"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, make_llama_fn: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mk")
    # Directory names in lower case, so that no path contains a placeholder.
    out = {name: make_llama_fn(root / name.lower(), seed) for name, seed in
           (("MODEL_A", 1), ("MODEL_B", 2), ("MODEL_C", 3), ("MODEL_BASE", 4))}
    for name, seed in (("DEEP_A", 5), ("DEEP_B", 6)):
        out[name] = make_llama_fn(root / name.lower(), seed, hidden=16, layers=40)
    return out


def load_fixture(name: str, zoo: dict[str, Path], tmp_path: Path) -> Path:
    (tmp_path / name).write_text((FIXTURES / name).read_text())
    return _subst(tmp_path / name, zoo)


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


# The shapes on 40-layer models (DEEP_*) take seconds to merge and load in transformers: slow lane.
@pytest.mark.parametrize("name", [pytest.param(p.name, marks=pytest.mark.slow) if "DEEP_" in p.read_text() else p.name
                                  for p in sorted(FIXTURES.glob("*.yml"))])
def test_published_shapes_run_unchanged(name: str, zoo: dict[str, Path], tmp_path: Path) -> None:
    cfg = load_fixture(name, zoo, tmp_path)
    result = merge(load_merge_config(cfg), tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()
    assert result.n_tensors > 0
    assert (tmp_path / "out" / "paperlab_merge.yaml").is_file()


def test_passthrough_stacks_layers_of_two_models(zoo: dict[str, Path], tmp_path: Path) -> None:
    merge(load_merge_config(load_fixture("orcamini-platy-44layer.yml", zoo, tmp_path)), tmp_path / "out")
    got = load_dir(tmp_path / "out")
    a, b = load_dir(zoo["DEEP_A"]), load_dir(zoo["DEEP_B"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.config.num_hidden_layers == 44
    name = "model.layers.{}.self_attn.q_proj.weight"
    assert torch.equal(got[name.format(3)], a[name.format(3)].half())
    assert torch.equal(got[name.format(24)], b[name.format(20)].half())  # first layer of the second slice
    assert torch.equal(got[name.format(43)], b[name.format(39)].half())
    assert torch.equal(got["model.embed_tokens.weight"], a["model.embed_tokens.weight"].half())  # first slice
    assert torch.equal(got["model.norm.weight"], b["model.norm.weight"].half())  # last slice


def test_base_listed_under_models_is_the_base(zoo: dict[str, Path], tmp_path: Path) -> None:
    merge(load_merge_config(load_fixture("ties-base-listed.yml", zoo, tmp_path)), tmp_path / "listed")
    cfg = (FIXTURES / "ties-base-listed.yml").read_text().replace("  - model: MODEL_BASE\n", "", 1)
    (tmp_path / "plain.yml").write_text(cfg)
    merge(load_merge_config(_subst(tmp_path / "plain.yml", zoo)), tmp_path / "plain")
    a, b = load_dir(tmp_path / "listed"), load_dir(tmp_path / "plain")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _subst(path: Path, zoo: dict[str, Path]) -> Path:
    path.write_text(re.sub(r"\b(?:MODEL|DEEP)_[A-Z]+\b", lambda m: str(zoo[m.group(0)]), path.read_text()))
    return path


@pytest.mark.slow
def test_pattern_is_read_as_filter(zoo: dict[str, Path], tmp_path: Path) -> None:
    text = (FIXTURES / "gradient-slerp.yml").read_text()
    (tmp_path / "old.yml").write_text(text.replace("filter:", "pattern:"))
    merge(load_merge_config(_subst(tmp_path / "old.yml", zoo)), tmp_path / "old")
    merge(load_merge_config(load_fixture("gradient-slerp.yml", zoo, tmp_path)), tmp_path / "new")
    a, b = load_dir(tmp_path / "old"), load_dir(tmp_path / "new")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("text,match", [
    ("models: [{model: MODEL_A}]\nmerge_method: linear\n---\nmodels: [{model: MODEL_B}]\nmerge_method: linear\n",
     "2 YAML documents.*one file per merge"),
    ("models: [{model: MODEL_A, parameters: {weight: 1}}]\nmerge_method: linear\nout_path: ./x\n", "out_path"),
    ("models: [{model: MODEL_A, parameters: {weight: 1}}]\nmerge_method: linear\ntokenizer: {source: union}\n"
     "tokenizer_source: base\n", "either tokenizer: or tokenizer_source:"),
    ("models: [{model: MODEL_A, parameters: {weight: 1, density: 0.5}}]\nmerge_method: linear\n",
     r"unsupported parameter\(s\) in models\[0\].parameters: density; method 'linear' takes weight here"),
    ("models: [{model: MODEL_A, parameters: {density: 0}}, {model: MODEL_B}]\nmerge_method: ties\nbase_model: MODEL_BASE\n",
     r"density must be in \(0, 1\]"),
    ("models: [{model: MODEL_A, parameters: {weight: .nan}}]\nmerge_method: linear\n", "finite"),
    ("models: [{model: MODEL_A}, {model: MODEL_B}]\nmerge_method: ties\nbase_model: MODEL_BASE\nparameters: {lambda: .inf}\n",
     "finite"),
    ("models: [{model: MODEL_A, parameters: {gamma: -1}}]\nmerge_method: breadcrumbs\nbase_model: MODEL_BASE\n",
     r"gamma must be in \[0, 1\], got -1"),
    ("models: [{model: MODEL_A}, {model: MODEL_B}]\nmerge_method: slerp\nbase_model: MODEL_A\n", "needs `t`"),
    ("models: [{model: MODEL_A, parameters: {weight: 1, density: 0.1, epsilon: 0.2}}]\nmerge_method: della\n"
     "base_model: MODEL_BASE\n", "density - epsilon"),
])
def test_bad_configs_are_one_line(zoo: dict[str, Path], tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "bad.yml").write_text(text)
    cfg = _subst(tmp_path / "bad.yml", zoo)
    with pytest.raises((MergeConfigError, SoupError), match=match):
        merge(load_merge_config(cfg), tmp_path / "out")
    assert not (tmp_path / "out").exists()
