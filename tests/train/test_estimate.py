"""--dry-run: the memory per rank printed for the GPU presets equals the formula, worked by hand
here from the published shapes (no GPU, nothing trained)."""

from __future__ import annotations

import re

import pytest

from paperlab.cli import main

GIB = 1024**3


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return capsys.readouterr().out


def table_rows(out: str) -> dict[str, list[float]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if len(cells) > 1 and all(re.fullmatch(r"[\d.]+", c) for c in cells[1:]):
            rows[cells[0]] = [float(c) for c in cells[1:]]
    return rows


def test_instella_gpu_preset_dry_run_matches_the_formula(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(["instella", "recipe", "--preset", "gpu", "--dry-run", "--nproc", "8", "--parallel", "fsdp"], capsys)
    # the gpu preset: hidden 1024, 16 layers, 16 heads (no GQA), SwiGLU 2816, released vocab 50,304, seq 1024
    C, L, F, V, T, N = 1024, 16, 2816, 50304, 1024, 8
    layer = 4 * C * C + 3 * C * F + 2 * C + 2 * C  # q k v o, gate up down, q/k norms, two block norms
    root = 2 * V * C + C  # embeddings, untied head, final norm
    P = L * layer + root
    assert f"{P:,} parameters" in out
    rows = table_rows(out)
    per_token = (11 * C + 4 * F) * 2 * L + V * (2 + 4)  # bf16 autocast in the gpu preset
    expect = {
        "pretrain": (32 // N) * T * per_token,
        "dpo": (16 // N) * 2 * T * per_token,   # a DPO sample is a pair
        "long/phase-1": 4 * T * per_token,  # 4x the context, one packed row per forward
        "long/phase-2": 16 * T * per_token,  # 16x
    }
    for stage, act in expect.items():
        weights, grads, buckets, optim, gathered, acts, total = rows[stage]
        assert weights == pytest.approx(4 * P / N / GIB, abs=0.006)
        assert grads == pytest.approx(4 * P / N / GIB, abs=0.006) and buckets == 0
        assert optim == pytest.approx(8 * P / N / GIB, abs=0.006)
        assert gathered == pytest.approx(2 * (root + 2 * layer) / GIB, abs=0.006)
        assert acts == pytest.approx(act / GIB, abs=0.006)
        assert total == pytest.approx((16 * P / N + 2 * (root + 2 * layer) + act) / GIB, abs=0.011)


def test_ddp_dry_run_keeps_whole_copies_and_buckets(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(["instella", "recipe", "--preset", "gpu", "--dry-run", "--nproc", "4", "--parallel", "ddp"], capsys)
    P = int(re.search(r"([\d,]+) parameters", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    weights, grads, buckets, optim, gathered, *_ = table_rows(out)["pretrain"]
    assert (weights, grads, buckets) == pytest.approx((4 * P / GIB,) * 3, abs=0.006)
    assert optim == pytest.approx(8 * P / GIB, abs=0.006) and gathered == 0


def test_paradiff_gpu_preset_dry_run_matches_the_formula(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(["paradiff", "train", "--preset", "gpu", "--dry-run", "--nproc", "4", "--parallel", "fsdp"], capsys)
    from paperlab.paradiff.config import get_preset
    from paperlab.paradiff.plan import layout_of

    cfg = get_preset("gpu")
    lay = layout_of(cfg)
    C, L, F, V, S, N = 512, 12, 2048, lay.vocab, lay.length, 4
    block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C)  # 2 LNs, qkv, proj, MLP
    root = V * C + S * C + lay.n_image * C + 4 * C + (C * C + C) + 2 * C + (C * V + V)
    P = L * block + root
    assert f"{P:,} parameters" in out
    rows = table_rows(out)
    act = (256 // N) * S * (L * (10 * C + 2 * F) * 2 + V * (2 + 4))
    assert rows["weights"][0] == pytest.approx(4 * P / N / GIB, abs=0.006)
    assert rows["optimizer"][0] == pytest.approx(8 * P / N / GIB, abs=0.006)
    assert rows["gathered"][0] == pytest.approx(2 * (root + 2 * block) / GIB, abs=0.006)
    assert rows["activations"][0] == pytest.approx(act / GIB, abs=0.006)


def test_dry_run_refuses_a_batch_the_ranks_cannot_share(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["instella", "recipe", "--preset", "gpu", "--dry-run", "--nproc", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "does not split evenly over 3 processes" in err[0]


def test_pararl_gpu_preset_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(["paradiff", "rl", "--preset", "gpu", "--dry-run", "--nproc", "8", "--parallel", "fsdp"], capsys)
    from paperlab.paradiff.config import get_preset
    from paperlab.paradiff.plan import layout_of
    from paperlab.paradiff.rl import rl_preset

    cfg, rl = get_preset("gpu"), rl_preset("gpu")
    lay = layout_of(cfg)
    P = int(re.search(r"([\d,]+) parameters", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    rows = table_rows(out)
    C, L, F, V, S = 512, 12, 2048, lay.vocab, lay.length
    # this rank's prompts x group x scored steps, and their unconditional copies (guided rollouts)
    seqs = rl.prompts // 8 * rl.group * rl.loss_steps * 2
    assert rows["activations"][0] == pytest.approx(seqs * S * (L * (10 * C + 2 * F) * 2 + V * 6) / GIB, abs=0.006)
    assert rows["gathered"][0] > 4 * P / GIB  # the reference model is whole on every rank
