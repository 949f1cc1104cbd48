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


def test_rl_command_writes_all_three_arms_over_seeds(plumbing: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rl"
    args = ["paradiff", "rl", "--preset", "test", "--out", str(out), "--updates", "2", "--group", "2",
            "--train-prompts", "2", "--prompts", "2", "--eval-prompts", "3", "--eval-every", "1", "--seeds", "2"]
    assert run(args) == 0
    res = json.loads((out / "rl.json").read_text())
    assert res["seeds"] == [0, 1] and res["n_prompts"] == 3 and res["rl_config"]["rollout"] == "eval"
    for arm in ("none", "final", "trajectory"):
        assert 0 <= res[arm]["output_alignment"] <= 1 and 0 <= res[arm]["text_quality"] <= 1
        lo, hi = res["ci95"][arm]["output_alignment"]
        assert lo <= res[arm]["output_alignment"] <= hi
    for pair in ("trajectory_minus_final", "final_minus_none", "trajectory_minus_none"):
        d = res["paired"][pair]["output_alignment"]
        assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    pooled = {arm: sum(res["per_seed"][s][arm]["output_alignment"] for s in ("0", "1")) / 2
              for arm in ("final", "trajectory")}
    for arm, v in pooled.items():
        assert abs(res[arm]["output_alignment"] - v) < 1e-3  # the pooled mean is the seeds' mean
    for s in ("0", "1"):
        rec = res["per_seed"][s]
        for arm in ("final", "trajectory"):
            tr = rec["train_reward"][arm]
            assert 0 <= tr["before"] <= 1 and 0 <= tr["after"] <= 1
            assert [h["update"] for h in rec["history"][arm]] == [1, 2]
            # held-out scores over RL: the start, after update 1, and the final scoring
            curve = rec["held_out_curve"][arm]
            assert [c["update"] for c in curve] == [0, 1, 2]
            assert curve[0]["output_alignment"] == res["none"]["output_alignment"]  # same model, same seeds
            assert curve[-1]["output_alignment"] == rec[arm]["output_alignment"]
    assert (out / "rl.png").stat().st_size > 0 and (out / "seed-1" / "trajectory").is_dir()
    assert "scorer reward on its RL training prompts" in capsys.readouterr().err
    # a rerun finds every arm done (its saved state) and gives the same numbers
    assert run(args) == 0
    again = json.loads((out / "rl.json").read_text())
    assert again["paired"] == res["paired"]
    for s in ("0", "1"):
        for key in ("final", "trajectory", "train_reward", "history"):
            assert again["per_seed"][s][key] == res["per_seed"][s][key]
