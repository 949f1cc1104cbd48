"""Released-layout checkpoints load natively; bad checkpoints get one line naming the problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from paperlab.instella.checkpoint import (
    check_checkpoint,
    convert_checkpoint,
    init_checkpoint,
    load_model,
    load_tokenizer_for,
)
from paperlab.instella.errors import CheckpointError, InstellaConfigError, WeightsMismatchError
from paperlab.instella.modeling import InstellaForCausalLM

from .conftest import REPO_SRC, write_released_checkpoint

IDS = torch.tensor([[5, 17, 3, 88, 42]])


@pytest.mark.slow  # a fresh interpreter imports torch and transformers (about 10 s)
def test_released_layout_loads_with_plain_auto_class_in_a_fresh_interpreter(
    released_dir: Path, tiny_model: InstellaForCausalLM, tmp_path: Path
) -> None:
    """`import paperlab.instella` then AutoModelForCausalLM: no trust_remote_code, no network,
    and the remote code next to the weights (which raises if run) is never executed."""
    with torch.no_grad():
        want = tiny_model(IDS).logits
    out = tmp_path / "logits.pt"
    script = (
        "import sys, torch, paperlab.instella\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(released_dir)!r})\n"
        "print(type(m).__module__)\n"
        f"torch.save(m(torch.tensor({IDS.tolist()})).logits.detach(), {str(out)!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": REPO_SRC, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("paperlab.instella.modeling")
    assert torch.allclose(torch.load(out), want, atol=1e-6)


def test_importing_the_cli_stays_light() -> None:
    script = ("import sys, paperlab.instella.cli\n"
              "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": REPO_SRC}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_load_model_dtypes_and_rope_override(released_dir: Path, tiny_model: InstellaForCausalLM) -> None:
    m = load_model(released_dir, device="cpu")
    with torch.no_grad():
        assert torch.allclose(m(IDS).logits, tiny_model(IDS).logits, atol=1e-6)
    bf = load_model(released_dir, device="cpu", dtype="bfloat16", rope_theta=500_000.0)
    assert bf.dtype == torch.bfloat16
    assert bf.config.rope_base == 500_000.0
    with pytest.raises(InstellaConfigError, match="dtype"):
        load_model(released_dir, device="cpu", dtype="float8")


def test_convert_writes_a_native_checkpoint(released_dir: Path, tmp_path: Path,
                                            tiny_model: InstellaForCausalLM) -> None:
    out = convert_checkpoint(released_dir, tmp_path / "native", max_shard_size="20KB")
    cfg = json.loads((out / "config.json").read_text())
    assert "auto_map" not in cfg
    assert cfg["architectures"] == ["InstellaForCausalLM"]
    assert cfg["rope_theta"] == 10000.0 and cfg["rope_scaling"] is None  # released keys kept
    assert not list(out.glob("*.py"))
    assert len(list(out.glob("*.safetensors"))) > 2  # re-sharded
    # 97 rows and no tokenizer in the source: the released tokenizer would not fit, none is added
    assert not (out / "tokenizer.json").is_file()
    assert not check_checkpoint(out).remote_code
    with torch.no_grad():
        assert torch.allclose(load_model(out, device="cpu")(IDS).logits, tiny_model(IDS).logits, atol=1e-6)
    with pytest.raises(CheckpointError, match="already exists"):
        convert_checkpoint(released_dir, out)


def test_init_writes_the_real_tokenizer_beside_the_weights(tmp_path: Path) -> None:
    path = init_checkpoint("tiny", tmp_path / "tiny")
    tok = load_tokenizer_for(path)
    assert len(tok) == 50280 and tok.eos_token_id == 0 and tok.pad_token_id == 1
    assert check_checkpoint(path).config["vocab_size"] == 50304
    (path / "tokenizer.json").unlink()  # convert adds the released tokenizer where it fits
    (path / "tokenizer_config.json").unlink()
    out = convert_checkpoint(path, tmp_path / "native")
    assert len(load_tokenizer_for(out)) == 50280


# -- bad input -------------------------------------------------------------------------------

def test_other_model_type_names_what_it_found(released_dir: Path) -> None:
    cfg = json.loads((released_dir / "config.json").read_text())
    cfg["model_type"] = "llama"
    (released_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type 'llama'"):
        check_checkpoint(released_dir)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        check_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a directory"):
        check_checkpoint(tmp_path / "nope")


def test_missing_shard(released_dir: Path) -> None:
    (released_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing shard model-00002-of-00002.safetensors"):
        check_checkpoint(released_dir)


def test_truncated_shard(released_dir: Path) -> None:
    shard = released_dir / "model-00001-of-00002.safetensors"
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size - 64)
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_model(released_dir, device="cpu")


def test_renamed_tensor_is_named(tmp_path: Path, tiny_model: InstellaForCausalLM) -> None:
    from safetensors.torch import save_file

    d = write_released_checkpoint(tiny_model, tmp_path / "ck", shards=1, remote_code=False)
    sd = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    sd["model.layers.1.self_attn.q_layernorm.weight"] = sd.pop("model.layers.1.self_attn.q_norm.weight")
    save_file(sd, str(d / "model-00001-of-00001.safetensors"))
    with pytest.raises(WeightsMismatchError, match=r"'model\.layers\.1\.self_attn\.q_norm\.weight' is missing"):
        check_checkpoint(d)


def test_config_contradicting_the_weights(released_dir: Path) -> None:
    cfg = json.loads((released_dir / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (released_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsMismatchError, match=r"gate_proj\.weight' has shape \[56, 32\] but config"):
        check_checkpoint(released_dir)


def test_extra_layer_in_weights(released_dir: Path) -> None:
    cfg = json.loads((released_dir / "config.json").read_text())
    cfg["num_hidden_layers"] = 2
    (released_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsMismatchError, match="unexpected tensor 'model.layers.2"):
        check_checkpoint(released_dir)


def test_pickle_only_is_refused_unless_asked(tmp_path: Path, tiny_model: InstellaForCausalLM) -> None:
    d = tmp_path / "pkl"
    tiny_model.save_pretrained(d, safe_serialization=False) if _can_save_pickle() else _save_pickle(tiny_model, d)
    assert not list(d.glob("*.safetensors"))
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        check_checkpoint(d)
    m = load_model(d, device="cpu", allow_pickle=True)
    with torch.no_grad():
        assert torch.allclose(m(IDS).logits, tiny_model(IDS).logits, atol=1e-6)


def _can_save_pickle() -> bool:
    return False  # transformers 5 writes safetensors only; write the .bin by hand


def _save_pickle(model: InstellaForCausalLM, d: Path) -> None:
    d.mkdir()
    model.config.to_json_file(str(d / "config.json"))
    torch.save(model.state_dict(), d / "pytorch_model.bin")


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from paperlab.cli import main

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(SystemExit) as exc:
        main(["instella", "info", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model_type 'qwen2'" in err
    with pytest.raises(SystemExit) as exc:
        main(["instella", "init", "--preset", "huge", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _cli(*args: str) -> int:
    from paperlab.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_init_info_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "tiny"
    assert _cli("instella", "init", "--preset", "tiny", str(d)) == 0
    assert _cli("instella", "info", str(d)) == 0
    assert "6,539,840" in capsys.readouterr().out
    assert _cli("instella", "generate", str(d), "Hello", "--max-new-tokens", "5", "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert "tokens/s" in captured.err and captured.out.strip()
