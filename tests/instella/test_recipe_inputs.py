"""Bad input to the long-context and math stages: one line, exit code 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paperlab.cli import main


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        main(["instella", "recipe", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    _, err = capsys.readouterr()
    return code, [line for line in err.splitlines() if line.strip()]


CASES = {
    "phases that shrink": ("long_phases: [{factor: 16, steps: 2, lr: 1.0e-4}, {factor: 4, steps: 2, lr: 1.0e-4}]\n",
                           [], "must grow from phase to phase"),
    "a GRPO group of one": ("grpo: {steps: 2, lr: 1.0e-4, group: 1}\n", [], "group"),
    "a long phase of factor 1": ("long_phases: [{factor: 1, steps: 2, lr: 1.0e-4}]\n", [], "factor"),
    "a warm-up ratio of 1": ("dpo: {steps: 2, lr: 1.0e-4, warmup_ratio: 1.0}\n", [], "warmup_ratio"),
    "long SFT with nothing before it": ("", ["--stage", "long_sft"], "needs a checkpoint from long"),
    "GRPO with nothing before it": ("", ["--stage", "grpo"], "needs a checkpoint from math_sft2"),
    "long SFT without the long stage": ("", ["--stage", "pretrain,long_sft"], "needs a checkpoint from long"),
    "a context longer than the corpus": ("corpus: {corpus}\n", ["--stage", "pretrain,long"],
                                         "does not fit the held-out tenth"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_recipe_input_is_one_line_and_writes_nothing(case: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    yaml_text, flags, fragment = CASES[case]
    corpus = tmp_path / "short.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 80)  # 3,520 bytes: 352 held out
    cfg = tmp_path / "r.yaml"
    cfg.write_text("gsm8k: synthetic\n" + yaml_text.replace("{corpus}", str(corpus)))
    out = tmp_path / "run"
    code, lines = _run([str(cfg), "--out", str(out), *flags], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("model_type, fragment", [("llama", "model_type 'llama'"), (None, "no config.json")])
def test_from_a_checkpoint_of_another_architecture_is_one_line_and_writes_nothing(
    model_type: str | None, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--from`` a Llama checkpoint (its tokenizer beside it) or a folder without config.json."""
    other = tmp_path / "other"
    other.mkdir()
    if model_type is not None:
        (other / "config.json").write_text(json.dumps({"model_type": model_type, "vocab_size": 32000}))
        (other / "tokenizer.json").write_text("{}")
    cfg = tmp_path / "r.yaml"
    cfg.write_text("gsm8k: synthetic\n")
    out = tmp_path / "run"
    code, lines = _run([str(cfg), "--out", str(out), "--stage", "math_sft1", "--from", str(other)], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert not out.exists()
