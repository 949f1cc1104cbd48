"""Models by Hugging Face id (a real cache layout in a temporary directory), revisions as mergekit
reads ``model@revision``, offline misses as one line, and ``model+adapter`` with a real PEFT-format
LoRA adapter made here."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from paperlab.soup.config import load_merge_config
from paperlab.soup.errors import CheckpointError, MergeConfigError
from paperlab.soup.merge import merge

SHA_A = "a" * 40
SHA_B = "b" * 40


def cache_model(hub: Path, repo: str, src: Path, sha: str, refs: tuple[str, ...] = ("main",)) -> None:
    """Lay ``src``'s files out as huggingface_hub's cache does: blobs, a snapshot of symlinks, refs."""
    root = hub / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / sha
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True)
    for f in src.iterdir():
        blob = root / "blobs" / f"{sha[:8]}-{f.name}"
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (root / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (root / "refs" / ref).write_text(sha)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, make_llama_fn: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    plain = root / "plain"
    a1, a2 = make_llama_fn(plain / "a1", 1), make_llama_fn(plain / "a2", 2)
    b = make_llama_fn(plain / "b", 3)
    hubdir = root / "hub"
    cache_model(hubdir, "org-a/tiny", a1, SHA_A, ("main",))
    cache_model(hubdir, "org-a/tiny", a2, SHA_B, ("v2",))
    cache_model(hubdir, "org-b/tiny", b, SHA_A)
    return {"hub": hubdir, "a1": a1, "a2": a2, "b": b}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, hub: dict[str, Path]) -> Path:
    """The library's default cache is the temporary one, and the hub is unreachable."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub["hub"]))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub["hub"]


def state(d: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def yml(tmp_path: Path, models: list[str], extra: str = "") -> Path:
    body = "".join(f"  - model: {m}\n    parameters: {{weight: 0.5}}\n" for m in models)
    (tmp_path / "m.yml").write_text(f"merge_method: linear\nmodels:\n{body}{extra}")
    return tmp_path / "m.yml"


def test_hub_ids_and_revisions_resolve_from_the_cache(hub: dict[str, Path], offline: Path, tmp_path: Path) -> None:
    merge(load_merge_config(yml(tmp_path, ["org-a/tiny", "org-b/tiny"])), tmp_path / "main")
    merge(load_merge_config(yml(tmp_path, ["org-a/tiny@v2", "org-b/tiny"])), tmp_path / "v2")
    merge(load_merge_config(yml(tmp_path, [f"org-a/tiny@{SHA_B}", "org-b/tiny"])), tmp_path / "sha")
    a1, a2, b = state(hub["a1"]), state(hub["a2"]), state(hub["b"])
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(state(tmp_path / "main")[name], (a1[name] * 0.5).add(b[name], alpha=0.5))
    assert torch.equal(state(tmp_path / "v2")[name], (a2[name] * 0.5).add(b[name], alpha=0.5))
    assert torch.equal(state(tmp_path / "v2")[name], state(tmp_path / "sha")[name])
    assert (tmp_path / "main" / "tokenizer.json").is_file()  # side files come through the snapshot too


def test_explicit_cache_dir_is_used(hub: dict[str, Path], tmp_path: Path) -> None:
    spec = load_merge_config(yml(tmp_path, ["org-a/tiny", "org-b/tiny"]), hf_cache=str(hub["hub"]))
    merge(spec, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("ref,match", [
    ("org-c/missing", "not in the Hugging Face cache, and the hub is offline.*hf download org-c/missing"),
    ("org-a/tiny@v9", r"hf download org-a/tiny --revision v9"),
    ("bad id!/x", "not a valid Hugging Face id"),
    ("org-a/tiny@v2@v3", "more than one '@'"),
    ("a+b+c", "more than one '\\+'"),
])
def test_bad_references_are_one_line_and_write_nothing(offline: Path, tmp_path: Path, ref: str, match: str) -> None:
    with pytest.raises((CheckpointError, MergeConfigError), match=match):
        merge(load_merge_config(yml(tmp_path, [ref, "org-b/tiny"])), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def make_adapter(out: Path, model: Path, *, r: int = 4, alpha: float = 8.0, rslora: bool = False,
                 modules: tuple[str, ...] = ("q_proj", "v_proj"), seed: int = 0) -> Path:
    """A PEFT-format LoRA adapter for ``model`` (adapter_config.json + adapter_model.safetensors)."""
    st = state(model)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, w in st.items():
        if any(f".{m}." in name for m in modules) and name.endswith(".weight"):
            stem = "base_model.model." + name.removesuffix(".weight")
            tensors[f"{stem}.lora_A.weight"] = torch.randn(r, w.shape[1], generator=g) * 0.1
            tensors[f"{stem}.lora_B.weight"] = torch.randn(w.shape[0], r, generator=g) * 0.1
    out.mkdir(parents=True)
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": rslora, "target_modules": list(modules),
        "fan_in_fan_out": False, "base_model_name_or_path": str(model), "task_type": "CAUSAL_LM"}))
    return out


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_adapter_is_applied_before_merging(hub: dict[str, Path], tmp_path: Path, rslora: bool) -> None:
    base, other = hub["a1"], hub["b"]
    ad = make_adapter(tmp_path / "ad", base, rslora=rslora)
    merge(load_merge_config(yml(tmp_path, [f"{base}+{ad}", str(other)], "paperlab: {chunk_elements: 300}\n")),
          tmp_path / "out")
    got, w, o, lo = state(tmp_path / "out"), state(base), state(other), load_file(ad / "adapter_model.safetensors")
    name = "model.layers.1.self_attn.q_proj.weight"
    stem = "base_model.model.model.layers.1.self_attn.q_proj"
    scale = 8.0 / (2.0 if rslora else 4.0)
    adapted = (w[name] + (lo[f"{stem}.lora_B.weight"] @ lo[f"{stem}.lora_A.weight"]) * scale)
    torch.testing.assert_close(got[name], adapted * 0.5 + o[name] * 0.5, rtol=1e-6, atol=1e-7)
    untouched = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(got[untouched], (w[untouched] * 0.5).add(o[untouched], alpha=0.5))


def test_lora_adapter_from_the_hub_cache(hub: dict[str, Path], offline: Path, tmp_path: Path) -> None:
    ad = make_adapter(tmp_path / "ad", hub["a1"])
    cache_model(offline, "org-a/tiny-lora", ad, "c" * 40)
    merge(load_merge_config(yml(tmp_path, ["org-a/tiny+org-a/tiny-lora", "org-b/tiny"])), tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_lora_adapter_of_another_base_is_one_line(hub: dict[str, Path], tmp_path: Path,
                                                  make_llama_fn: Callable[..., Path]) -> None:
    wide = make_llama_fn(tmp_path / "wide", 9, hidden=48)
    ad = make_adapter(tmp_path / "ad", wide)
    with pytest.raises(CheckpointError, match="does not fit .*made for another base model"):
        merge(load_merge_config(yml(tmp_path, [f"{hub['a1']}+{ad}", str(hub["b"])])), tmp_path / "out")
    deep = make_llama_fn(tmp_path / "deep", 9, layers=4)
    ad2 = make_adapter(tmp_path / "ad2", deep)
    with pytest.raises(CheckpointError, match=r"adapts model.layers.[23]\..*which .* does not have"):
        merge(load_merge_config(yml(tmp_path, [f"{hub['a1']}+{ad2}", str(hub["b"])])), tmp_path / "out")
    assert not (tmp_path / "out").exists()
