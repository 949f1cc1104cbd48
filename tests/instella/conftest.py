"""Tiny Instella configs and checkpoints built from the published facts (PAPERS.md section 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import paperlab.instella  # noqa: F401 - registers model_type "instella"
from paperlab.instella.configuration import InstellaConfig
from paperlab.instella.modeling import InstellaForCausalLM


def tiny_config(**overrides: Any) -> InstellaConfig:
    """3 layers, GQA (4 query heads, 2 KV heads), a small vocabulary so float64 stays cheap."""
    base: dict[str, Any] = dict(
        vocab_size=97, hidden_size=32, intermediate_size=56, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return InstellaConfig(**{**base, **overrides})


def randomized_model(config: InstellaConfig, seed: int = 0) -> InstellaForCausalLM:
    """Random weights with every norm weight far from 1 (so a misplaced norm shows)."""
    torch.manual_seed(seed)
    model = InstellaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.empty_like(p).uniform_(0.2, 3.0) * torch.sign(torch.randn_like(p)))
    return model


def released_state_dict(model: InstellaForCausalLM) -> dict[str, torch.Tensor]:
    """The weights under the released tensor names, as AMD's files hold them."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def write_released_checkpoint(
    model: InstellaForCausalLM, out: Path, shards: int = 2, remote_code: bool = True
) -> Path:
    """A checkpoint laid out like amd/Instella-3B: legacy config keys, an auto_map to remote
    code, weights sharded by hand with safetensors (not by paperlab's own writer)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    cfg = model.config
    config_json: dict[str, Any] = {
        "architectures": ["InstellaForCausalLM"],
        "model_type": "instella",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "hidden_act": "silu", "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": 0.02, "rms_norm_eps": 1e-5, "use_cache": True,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 0, "tie_word_embeddings": False,
        "rope_theta": cfg.rope_base, "rope_scaling": None, "attention_bias": False,
        "attention_dropout": 0.0, "torch_dtype": "float32", "transformers_version": "4.47.1",
    }
    if remote_code:
        config_json["auto_map"] = {
            "AutoConfig": "configuration_instella.InstellaConfig",
            "AutoModelForCausalLM": "modeling_instella.InstellaForCausalLM",
        }
        (out / "modeling_instella.py").write_text("raise RuntimeError('remote code must not run')\n")
        (out / "configuration_instella.py").write_text("raise RuntimeError('remote code must not run')\n")
    (out / "config.json").write_text(json.dumps(config_json, indent=2))
    sd = released_state_dict(model)
    names = list(sd)
    per = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: sd[n] for n in names[i * per : (i + 1) * per]}
        save_file(part, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    return out


@pytest.fixture(scope="session")
def tiny_preset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset with the real tokenizer, written once (random weights; read it, never
    change it)."""
    from paperlab.instella.checkpoint import init_checkpoint

    return init_checkpoint("tiny", tmp_path_factory.mktemp("preset") / "tiny", seed=0)


@pytest.fixture
def tiny_model() -> InstellaForCausalLM:
    return randomized_model(tiny_config())


@pytest.fixture
def released_dir(tmp_path: Path, tiny_model: InstellaForCausalLM) -> Path:
    return write_released_checkpoint(tiny_model, tmp_path / "Instella-tiny")


REPO_SRC = str(Path(__file__).resolve().parents[2] / "src")
