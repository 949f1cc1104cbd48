"""A small real training run of paperlab.train, launched by the tests as one process or under
torchrun: a token table and a two-block MLP classifier with per-sample dropout and a variable
number of loss units per sample (so the global count matters), micro-batches, clipping, a warm-up
cosine schedule.

    python toy_run.py OUT STEPS [--parallel P] [--stop-after N] [--width W] [--batch B]

Writes OUT/result.json (losses, world size, mode, a weight checksum) on rank 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from paperlab.train import (
    FnTask,
    LossParts,
    OptimSpec,
    RowDropout,
    Schedule,
    TrainSpec,
    distributed,
    full_state_dict,
    no_decay_for_vectors,
    row_seeds,
    run_training,
    sample_generator,
    sample_seed,
)

VOCAB = 64


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.drop = RowDropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(torch.tanh(self.lin(x)))


class Net(nn.Module):
    _no_split_modules = ["Block"]

    def __init__(self, width: int) -> None:
        super().__init__()
        # a token table of which each batch touches a few rows (DDP averages it row-sparse)
        self.emb = nn.Embedding(VOCAB, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(2))
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = x + self.emb(ids)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def make_batch(width: int):  # type: ignore[no-untyped-def]
    def batch(step: int, rows: range) -> dict:  # type: ignore[type-arg]
        xs, ys, ids, seeds = [], [], [], []
        for i in rows:
            g = sample_generator(0, step, i)
            units = int(torch.randint(1, 4, (1,), generator=g))  # 1-3 scored positions of 3
            xs.append(torch.randn(3, width, generator=g))
            ys.append(torch.where(torch.arange(3) < units, torch.randint(0, 4, (3,), generator=g), -100))
            ids.append(torch.randint(0, VOCAB, (3,), generator=g))
            seeds.append(sample_seed(0, step, i))
        return {"x": torch.stack(xs), "y": torch.stack(ys), "ids": torch.stack(ids), "seeds": seeds}
    return batch


def loss(model: nn.Module, b: dict) -> LossParts:  # type: ignore[type-arg]
    with row_seeds(b["seeds"]):
        logits = model(b["x"], b["ids"])
    total = nn.functional.cross_entropy(logits.reshape(-1, 4), b["y"].reshape(-1), reduction="sum")
    return LossParts(total, int((b["y"] != -100).sum()), tokens=int(b["x"].shape[0] * 3))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("steps", type=int)
    ap.add_argument("--parallel", default=None)
    ap.add_argument("--stop-after", type=int, default=None)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    with distributed(a.parallel, "cpu") as ctx:
        torch.manual_seed(0)
        spec = TrainSpec(steps=a.steps, global_batch=a.batch,
                         optim=OptimSpec(lr=1e-2, weight_decay=0.1, no_decay=no_decay_for_vectors),
                         schedule=Schedule("cosine", warmup=3, final_ratio=0.1), grad_clip=0.5, micro_batch=2,
                         save_every=5)
        w, res = run_training(Net(a.width), FnTask(make_batch(a.width), loss), spec, ctx,
                              state_dir=a.out / "state", fingerprint={"width": a.width}, stop_after=a.stop_after)
        full = full_state_dict(w)
        if ctx.is_main:
            a.out.mkdir(parents=True, exist_ok=True)
            (a.out / "result.json").write_text(json.dumps({
                "losses": res.losses, "world_size": res.world_size, "parallel": res.parallel,
                "resumed_from": res.resumed_from, "checksum": float(sum(v.double().sum() for v in full.values())),
            }))


if __name__ == "__main__":
    main()
