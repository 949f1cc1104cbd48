"""``paperlab paradiff rl`` end to end on a very short run: rl.json with every arm, the PNG, resuming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from paperlab.cli import main


def run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_rl_command_writes_all_three_arms_and_the_training_reward(plumbing: Any, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rl"
    args = ["paradiff", "rl", "--preset", "test", "--out", str(out), "--updates", "2", "--group", "2",
            "--train-prompts", "2", "--prompts", "2", "--eval-prompts", "3", "--eval-every", "1"]
    assert run(args) == 0
    res = json.loads((out / "rl.json").read_text())
    for arm in ("none", "final", "trajectory"):
        assert 0 <= res[arm]["output_alignment"] <= 1
    for arm in ("final", "trajectory"):
        tr = res["train_reward"][arm]
        assert 0 <= tr["before"] <= 1 and 0 <= tr["after"] <= 1
        assert [h["update"] for h in res["history"][arm]] == [1, 2]
        # held-out scores over RL: the start, after update 1, and the final scoring
        curve = res["held_out_curve"][arm]
        assert [c["update"] for c in curve] == [0, 1, 2]
        assert curve[0]["output_alignment"] == res["none"]["output_alignment"]  # same model, same seeds
        assert curve[-1]["output_alignment"] == res[arm]["output_alignment"]
    assert res["rl_config"]["train_prompts"] == 2 and res["n_prompts"] == 3
    assert (out / "rl.png").stat().st_size > 0
    assert "scorer reward on the RL training prompts" in capsys.readouterr().err
    # a rerun finds every arm done (its saved state) and gives the same numbers
    assert run(args) == 0
    assert json.loads((out / "rl.json").read_text())["train_reward"] == res["train_reward"]
