"""The shared loop in one process: schedules, per-sample randomness, gradient scaling, clipping,
resume, and each bad input as one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from paperlab.errors import TrainError
from paperlab.train import (
    FnTask,
    LossParts,
    OptimSpec,
    RowDropout,
    Schedule,
    TrainSpec,
    check_launch,
    init_distributed,
    local_rows,
    row_seeds,
    run_training,
    sample_seed,
    single_process,
)
from paperlab.train.loop import clip_gradients
from paperlab.train.parallel import row_sparse_params


def test_schedules_by_hand() -> None:
    cos = Schedule("cosine", warmup=4, final_ratio=0.1)
    assert [cos.factor(s, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cos.factor(4, 14) == 1.0 and math.isclose(cos.factor(9, 14), 0.55) and math.isclose(cos.factor(14, 14), 0.1)
    lin = Schedule("linear", warmup=0)
    assert lin.factor(0, 10) == 1.0 and math.isclose(lin.factor(5, 10), 0.5) and lin.factor(10, 10) == 0.0
    assert Schedule("constant", warmup=2).factor(1, 5) == 1.0 and Schedule("constant", warmup=2).factor(0, 5) == 0.5


def test_sample_seeds_are_stable_and_spread() -> None:
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3)
    seeds = {sample_seed(0, s, i) for s in range(50) for i in range(50)}
    assert len(seeds) == 2500 and all(0 <= x < 2**63 for x in seeds)
    assert sample_seed(0, 1, 2) != sample_seed(0, 2, 1)


def test_row_dropout_draws_each_row_from_its_own_seed() -> None:
    drop = RowDropout(0.5).train()
    x = torch.ones(4, 3, 8)
    with row_seeds([11, 12, 13, 14]):
        whole = drop(x)
    with row_seeds([13, 14]):
        half = drop(x[2:])  # the same rows in another batch (another process) get the same masks
    assert torch.equal(whole[2:], half)
    assert not torch.equal(whole[0], whole[1])
    assert set(whole.unique().tolist()) <= {0.0, 2.0}
    with row_seeds([1, 2]), pytest.raises(RuntimeError, match="2 seeds for a batch of 4"):
        drop(x)
    assert torch.equal(drop.eval()(x), x)


def test_local_rows_split_the_global_batch_or_say_how_to_fix_it() -> None:
    ctx = single_process("cpu")
    assert local_rows(6, ctx) == range(0, 6)
    from dataclasses import replace

    assert local_rows(6, replace(ctx, rank=1, world_size=2)) == range(3, 6)
    with pytest.raises(TrainError, match="does not split evenly over 4 processes.*multiple of 4"):
        local_rows(6, replace(ctx, world_size=4))


def test_launch_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(TrainError, match="--parallel fsdp runs one process per rank under torchrun: torchrun"):
        check_launch("fsdp")
    with pytest.raises(TrainError, match="unknown --parallel 'zero3'"):
        check_launch("zero3")
    with pytest.raises(TrainError, match="unknown --backend 'mpi'"):
        check_launch(None, "mpi")
    # inside a (pretend) launch, NCCL on the CPU is refused before any process group is made
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(TrainError, match="NCCL backend needs CUDA.*--backend gloo") as exc:
        init_distributed("ddp", "cpu", "nccl")
    assert "\n" not in str(exc.value)
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainError, match="--parallel none cannot train on 2 processes"):
        check_launch("none")


def _linear_task(count_per_row: int = 3) -> FnTask:
    def batch(step: int, rows: range) -> torch.Tensor:
        return torch.stack([torch.randn(count_per_row, 4, generator=torch.Generator().manual_seed(step * 100 + i))
                            for i in rows])

    def loss(model: nn.Module, x: torch.Tensor) -> LossParts:
        return LossParts(model(x).pow(2).sum(), x.shape[0] * count_per_row, tokens=x.numel())

    return FnTask(batch, loss)


def test_gradient_is_that_of_the_mean_over_units_whatever_the_micro_batches() -> None:
    torch.manual_seed(0)
    base = nn.Linear(4, 1)
    spec = TrainSpec(steps=1, global_batch=6, optim=OptimSpec(lr=0.1, kind="adam"), grad_clip=None)
    results = []
    for micro in (None, 2, 4):
        m = nn.Linear(4, 1)
        m.load_state_dict(base.state_dict())
        _, res = run_training(m, _linear_task(), TrainSpec(**{**spec.__dict__, "micro_batch": micro}),
                              single_process("cpu"))
        results.append((res.losses[0], m.weight.detach().clone()))
    x = _linear_task().batch(0, range(6))
    with torch.no_grad():
        expected = float(base(x).pow(2).mean())
    assert math.isclose(results[0][0], expected, rel_tol=1e-6)
    for loss, weight in results[1:]:
        assert math.isclose(loss, results[0][0], rel_tol=1e-6) and torch.allclose(weight, results[0][1], atol=1e-7)


def test_clipping_sums_squares_in_float64() -> None:
    ps = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2))]
    ps[0].grad = torch.tensor([3.0, 0.0, 0.0])
    ps[1].grad = torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    norm = clip_gradients(ps, 1.0, single_process("cpu"), mode="none")
    assert norm == 5.0
    total = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ps))  # type: ignore[union-attr]
    assert math.isclose(total, 1.0, rel_tol=1e-5)
    # the loop's rescaling to the global mean rides on the same pass: the norm is the rescaled one
    ps[0].grad, ps[1].grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    assert clip_gradients(ps, 100.0, single_process("cpu"), mode="none", scale=2.0) == 10.0
    assert ps[0].grad.tolist() == [6.0, 0.0, 0.0]  # type: ignore[union-attr]
    assert clip_gradients(ps, 1.0, single_process("cpu"), mode="none", scale=0.5) == 5.0
    assert math.isclose(float(ps[0].grad[0]), 0.6, rel_tol=1e-6)  # type: ignore[index]


def _toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def test_a_stopped_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    spec = TrainSpec(steps=9, global_batch=4, optim=OptimSpec(lr=0.05, weight_decay=0.1),
                     schedule=Schedule("cosine", warmup=2, final_ratio=0.1), save_every=3)
    whole = _toy_model()
    _, ref = run_training(whole, _linear_task(), spec, single_process("cpu"))
    part = _toy_model()
    _, first = run_training(part, _linear_task(), spec, single_process("cpu"), state_dir=tmp_path / "s",
                            fingerprint={"m": 1}, stop_after=4)
    assert len(first.losses) == 4 and json.loads((tmp_path / "s" / "latest.json").read_text())["step"] == 4
    again = _toy_model()
    _, rest = run_training(again, _linear_task(), spec, single_process("cpu"), state_dir=tmp_path / "s",
                           fingerprint={"m": 1})
    assert rest.resumed_from == 4 and rest.losses == ref.losses
    for a, b in zip(whole.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_state_of_another_config_is_refused_and_kept(tmp_path: Path) -> None:
    spec = TrainSpec(steps=6, global_batch=4, optim=OptimSpec(lr=0.05), save_every=2)
    run_training(_toy_model(), _linear_task(), spec, single_process("cpu"), state_dir=tmp_path / "s",
                 fingerprint={"hidden": 8}, stop_after=3)
    before = sorted(p.name for p in (tmp_path / "s").rglob("*"))
    with pytest.raises(TrainError, match="written by a run with another 'hidden' \\(8, now 16\\)") as exc:
        run_training(_toy_model(), _linear_task(), spec, single_process("cpu"), state_dir=tmp_path / "s",
                     fingerprint={"hidden": 16})
    assert "\n" not in str(exc.value)
    assert sorted(p.name for p in (tmp_path / "s").rglob("*")) == before


def test_a_nan_loss_stops_with_one_line() -> None:
    def loss(model: nn.Module, x: torch.Tensor) -> LossParts:
        return LossParts(model(x).sum() * float("nan"), 1)

    with pytest.raises(TrainError, match="the loss is nan at step 0; lower the learning rate"):
        run_training(_toy_model(), FnTask(_linear_task().batch, loss),
                     TrainSpec(steps=2, global_batch=2, optim=OptimSpec(lr=0.1)), single_process("cpu"))


def test_only_untied_input_embeddings_are_averaged_row_sparse() -> None:
    """A table read by an output head too gets a dense gradient: it must stay in DDP's buckets."""

    class LM(nn.Module):
        def __init__(self, tied: bool) -> None:
            super().__init__()
            self.tok = nn.Embedding(50, 8)
            self.pos = nn.Embedding(4, 8)
            self.head = nn.Linear(8, 50, bias=False)
            if tied:
                self.head.weight = self.tok.weight

    assert list(row_sparse_params(LM(tied=False))) == ["tok.weight", "pos.weight"]
    assert list(row_sparse_params(LM(tied=True))) == ["pos.weight"]
    frozen = LM(tied=False)
    frozen.pos.weight.requires_grad_(False)
    assert list(row_sparse_params(frozen)) == ["tok.weight"]
