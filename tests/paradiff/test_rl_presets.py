"""ParaRL presets: the gpu preset is a valid config that fails in one line without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from paperlab.cli import main
from paperlab.paradiff.errors import ParadiffConfigError
from paperlab.paradiff.rl import RL_PRESETS, RLConfig, check_device, rl_preset

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error on a machine without CUDA")


def test_every_rl_preset_is_a_valid_config() -> None:
    for name, cfg in RL_PRESETS.items():
        assert RLConfig.model_validate(cfg.model_dump()) == cfg, name
    gpu = rl_preset("gpu")
    assert (gpu.device, gpu.dtype) == ("cuda", "bfloat16")
    # sized for a GPU: more of everything than the CPU presets
    assert gpu.group * gpu.prompts > 4 * rl_preset("tiny").group * rl_preset("tiny").prompts
    assert gpu.scorer.d_model > rl_preset("tiny").scorer.d_model
    assert check_device(rl_preset("tiny")) == torch.device("cpu")


def test_unknown_rl_preset_and_bad_device_are_config_errors() -> None:
    with pytest.raises(ParadiffConfigError, match="choose one of: test, tiny, small, gpu"):
        rl_preset("huge")
    with pytest.raises(ParadiffConfigError, match="unknown RL device"):
        check_device(RLConfig(device="tpu-ish"))
    with pytest.raises(ParadiffConfigError, match="bfloat16 is for CUDA"):
        check_device(RLConfig(dtype="bfloat16"))


@no_cuda
def test_gpu_preset_without_cuda_is_one_line_and_writes_nothing(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ParadiffConfigError, match="needs CUDA"):
        check_device(rl_preset("gpu"))
    out = tmp_path / "rl-gpu"
    try:
        main(["paradiff", "rl", "--preset", "gpu", "--out", str(out)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "needs CUDA" in lines[0] and "--preset tiny" in lines[0], err
    assert not out.exists()
