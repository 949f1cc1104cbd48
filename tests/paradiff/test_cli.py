"""``paperlab paradiff`` as a user runs it: good runs write files, bad input is one line and exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from paperlab.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["paradiff", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


def test_cli_module_imports_no_heavy_libraries() -> None:
    import subprocess

    code = ("import sys, paperlab.paradiff.cli; "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    assert out.stdout.strip() == "[]"


def test_unknown_words_in_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["sample", "--prompt", "paint the circle purple"], capsys)
    assert_one_line_error(code, err, "paint", "purple", "vocab")


@pytest.mark.parametrize(("size", "mode", "needle"), [((64, 64), "RGB", "64x64"), ((32, 32), "L", "mode L"),
                                                      ((32, 32), "RGBA", "mode RGBA")])
def test_bad_input_images(tmp_path: Path, capsys: pytest.CaptureFixture[str], size: tuple[int, int], mode: str,
                          needle: str) -> None:
    path = tmp_path / "in.png"
    Image.new(mode, size).save(path)
    code, _, err = run_cli(["sample", "--prompt", "remove the circle", "--image", str(path)], capsys)
    assert_one_line_error(code, err, needle)


def test_not_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "in.png"
    path.write_text("not a png")
    code, _, err = run_cli(["sample", "--prompt", "remove the circle", "--image", str(path)], capsys)
    assert_one_line_error(code, err, "not a readable image")


def test_checkpoint_from_another_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from paperlab.paradiff.store import save_checkpoint

    save_checkpoint(tmp_path / "ck" / "vq", {"w": torch.zeros(2)}, {"kind": "vq", "hash": "0123456789ab"})
    code, _, err = run_cli(["sample", "--prompt", "remove the circle", "--checkpoint", str(tmp_path / "ck")], capsys)
    assert_one_line_error(code, err, "another config")


def test_corrupt_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from paperlab.paradiff.config import get_preset
    from paperlab.paradiff.vq import vq_cache_path

    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "cache"))
    path = vq_cache_path(get_preset("tiny").vq)
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"kind": "vq"}))
    (path / "weights.safetensors").write_bytes(b"\x00" * 40)  # a half-written file
    code, _, err = run_cli(["sample", "--prompt", "remove the circle"], capsys)
    assert_one_line_error(code, err, "corrupt", "--retrain")


def test_unknown_preset_and_sampler(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--preset", "huge"], capsys)
    assert_one_line_error(code, err, "tiny")
    code, _, err = run_cli(["render", "--scene", "big red circle z9", "--out", "x.png"], capsys)
    assert_one_line_error(code, err, "does not parse")


def test_render_then_sample_then_trajectory(plumbing: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in.png"
    code, _, err = run_cli(["render", "--scene", "big red circle b2 ; small blue square c3", "--out", str(inp)], capsys)
    assert code == 0, err
    out = tmp_path / "out.png"
    code, stdout, err = run_cli(["sample", "--prompt", "recolour the circle to the colour of the blue shape",
                                 "--image", str(inp), "--out", str(out), "--preset", "test"], capsys)
    assert code == 0, err
    assert stdout.startswith("text:") and "text and image agree:" in stdout
    img = np.asarray(Image.open(out))
    assert img.shape == (32, 32, 3)
    gif = tmp_path / "traj.gif"
    code, stdout, err = run_cli(["trajectory", "--prompt", "draw a big red circle at b2 and a small blue square at c3",
                                 "--out", str(gif), "--sampler", "sequential", "--preset", "test"], capsys)
    assert code == 0, err
    with Image.open(gif) as im:
        assert im.n_frames == plumbing.cfg.sample.text_steps + plumbing.cfg.sample.image_steps
    strip = tmp_path / "traj.png"
    code, _, err = run_cli(["trajectory", "--prompt", "draw a big red circle at b2", "--out", str(strip),
                            "--every", "2", "--preset", "test"], capsys)
    assert code == 0, err
    assert Image.open(strip).width > 4 * 32 * 2


def test_bench_command_writes_the_documented_json(plumbing: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run_cli(["bench", "--preset", "test", "--out", str(tmp_path / "b"), "--n-prompts", "12",
                                 "--seeds", "2"], capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert data["n_prompts"] == 12
    held = data["over_seeds"]
    assert held["seeds"] == 2 and set(held["per_seed"]) == {"0", "1"}
    first = held["per_seed"]["0"]  # seed 0 is the main run
    assert first["parallel"] == data["samplers"]["parallel"]["output_alignment"]
    assert first["difference"]["mean"] == data["paired"]["parallel_minus_sequential_output_alignment"]["mean"]
    assert 0 <= held["pooled"]["mcnemar"]["p"] <= 1 and "McNemar exact p" in err
    assert set(data["samplers"]) == {"parallel", "sequential", "image-only"}
    assert "output_alignment" in data["samplers"]["parallel"]
    assert (tmp_path / "b" / "bench.png").is_file()
    assert "output_alignment" in stdout


@pytest.mark.parametrize(("flags", "needles"), [
    (["--guidance", "-1"], ("sample.guidance", "greater than or equal to 0")),
    (["--guidance", "inf"], ("sample.guidance", "finite")),
    (["--guidance", "nan"], ("sample.guidance",)),
    (["--text-guidance", "-0.5"], ("sample.text_guidance", "greater than or equal to 0")),
    (["--text-guidance", "inf"], ("sample.text_guidance", "finite")),
    (["--schedule", "cosin"], ("sample.schedule", "'cosine'", "'linear'")),
    (["--attention", "sparse"], ("model.attention", "'full'", "'prefix'")),
])
@pytest.mark.parametrize("command", ["bench", "sample", "trajectory"])
def test_bad_sampler_settings_are_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch, command: str,
                                                             flags: list[str], needles: tuple[str, ...]) -> None:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / ("b" if command == "bench" else "o.png")
    args = {"bench": ["bench", "--out", str(out)],
            "sample": ["sample", "--prompt", "draw a big red circle at b2", "--out", str(out)],
            "trajectory": ["trajectory", "--prompt", "draw a big red circle at b2", "--out", str(out)]}[command]
    code, _, err = run_cli([*args, "--preset", "test", *flags], capsys)
    assert_one_line_error(code, err, *needles)
    assert not out.exists() and not (tmp_path / "cache").exists()  # nothing trained, nothing written


@pytest.mark.parametrize(("flags", "needle"), [(["--clip", "2"], "clip"), (["--group", "1"], "group"),
                                                (["--rollout", "greedy"], "rollout"), (["--lr", "-1"], "lr")])
def test_rl_rejects_bad_settings_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                                 needle: str) -> None:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "cache"))
    code, _, err = run_cli(["rl", "--out", str(tmp_path / "rl"), *flags], capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "rl").exists() and not (tmp_path / "cache").exists()


def test_gpu_preset_without_cuda_is_one_line_and_trains_nothing(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the gpu preset would really train")
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "cache"))
    code, _, err = run_cli(["train", "--preset", "gpu", "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "needs CUDA", "--preset tiny or small")
    assert not (tmp_path / "out").exists() and not list((tmp_path / "cache").rglob("*.safetensors"))


def test_every_preset_is_a_valid_config_of_the_documented_size() -> None:
    """tiny and small build at their sizes (tiny 0.5M parameters; small 1.5M, about 3x, trained
    2.5x longer); gpu is the large one (39M); all use the release's full attention and sampler."""
    import torch

    from paperlab.paradiff.config import PRESETS
    from paperlab.paradiff.model import Layout, ParaDiffModel

    sizes = {}
    for name, cfg in PRESETS.items():
        grid = 32 // cfg.vq.patch
        with torch.device("meta"):
            model = ParaDiffModel(cfg.model, Layout(n_image=grid * grid, codebook=cfg.vq.codebook))
        sizes[name] = sum(p.numel() for p in model.parameters())
        assert cfg.model.attention == "full" and cfg.sample.guidance == 4.0 and cfg.sample.text_guidance == 0.0
        assert (cfg.sample.schedule, cfg.sample.schedule_origin, cfg.sample.text_temperature) == ("cosine", "text", 0)
    assert 0.3e6 < sizes["tiny"] < 1e6 and 2.5 * sizes["tiny"] < sizes["small"] < 5e6 and sizes["gpu"] > 30e6, sizes

