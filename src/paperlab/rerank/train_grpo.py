"""GRPO training of a groupwise scorer with TRL (for users with a GPU), plus a CPU smoke run.

Each training example is one group prompt (the ``grouprank-json/v1`` template over a group of
passages with graded labels); the model samples several replies per prompt and
:func:`paperlab.rerank.reward.reward_from_reply` scores each one (NDCG of the group order +
group alignment + format validity). TRL is optional: ``pip install trl`` (it brings datasets).

    python -m paperlab.rerank.train_grpo --data DIR --out runs/grpo --steps 500   # GPU
    python -m paperlab.rerank.train_grpo --smoke --out /tmp/grpo-smoke            # CPU, 2 steps

Groups come from a BEIR directory (judged passages mixed with BM25 negatives, labels from
qrels) or, with ``--smoke``, from the built-in sample.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paperlab.rerank.errors import RerankConfigError
from paperlab.rerank.prompts import GROUPWISE_JSON_V1, truncate_passage
from paperlab.rerank.reward import reward_from_reply

log = logging.getLogger(__name__)


def build_examples(queries: dict[str, str], candidates: dict[str, list[str]], texts: dict[str, str],
                   qrels: dict[str, dict[str, int]], group_size: int = 8, max_chars: int = 300,
                   seed: int = 0) -> list[dict[str, Any]]:
    """One example per (query, shuffled group): ``prompt`` (chat messages) and ``labels``."""
    rng = random.Random(seed)
    out = []
    for qid, cands in candidates.items():
        ids = list(cands)
        rng.shuffle(ids)
        for start in range(0, len(ids), group_size):
            group = ids[start : start + group_size]
            msgs = GROUPWISE_JSON_V1.render(queries[qid], [truncate_passage(texts[d], max_chars) for d in group])
            out.append({"prompt": msgs, "labels": [qrels.get(qid, {}).get(d, 0) for d in group]})
    return out


def grpo_reward(completions: Sequence[Any], labels: Sequence[Sequence[int]], **_: Any) -> list[float]:
    """TRL reward function: ``reward_from_reply`` per sampled completion."""
    rewards = []
    for comp, lab in zip(completions, labels, strict=True):
        text = comp[-1]["content"] if isinstance(comp, list) else str(comp)
        rewards.append(reward_from_reply(text, lab).total)
    return rewards


def _sample_examples(group_size: int) -> list[dict[str, Any]]:
    from paperlab.rerank.sample import CANDIDATES, PASSAGES, QRELS, QUERIES

    return build_examples(QUERIES, CANDIDATES, PASSAGES, QRELS, group_size=group_size, max_chars=160)


def _beir_examples(data: Path, group_size: int, n_neg: int) -> list[dict[str, Any]]:
    from paperlab.rerank.beir import load_beir
    from paperlab.rerank.retrieve import BM25Index

    ds = load_beir(data)
    qids = ds.judged_queries()
    hits = BM25Index.build(ds.corpus).search([ds.queries[q] for q in qids], k=n_neg)
    cands = {}
    for q, h in zip(qids, hits, strict=True):
        judged = list(ds.qrels[q])[: group_size // 2]
        cands[q] = judged + [d for d, _ in h if d not in judged][: group_size - len(judged)]
    return build_examples(ds.queries, cands, ds.corpus, ds.qrels, group_size=group_size)


def train(out: Path, model: str | None = None, data: Path | None = None, steps: int = 2,
          group_size: int = 4, num_generations: int = 2, max_completion_length: int = 48,
          lr: float = 1e-6, use_cpu: bool = True) -> dict[str, Any]:
    """Run GRPO; returns the trainer's log history (and writes it to ``out/grpo_log.json``)."""
    try:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        raise RerankConfigError("GRPO training needs TRL: pip install trl") from e
    if model is None:
        from paperlab.llm.packaged import smollm2_dir

        model = str(smollm2_dir())
    examples = _beir_examples(data, group_size, 30) if data else _sample_examples(group_size)
    cfg = GRPOConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=num_generations,
        num_generations=num_generations, max_completion_length=max_completion_length,
        learning_rate=lr, logging_steps=1, save_strategy="no", report_to=[], use_cpu=use_cpu,
        bf16=False, gradient_checkpointing=False, temperature=1.0, seed=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=grpo_reward, args=cfg,
                          train_dataset=Dataset.from_list(examples))
    t0 = time.perf_counter()
    trainer.train()
    history = {"wall_s": time.perf_counter() - t0, "examples": len(examples), "log": trainer.state.log_history}
    out.mkdir(parents=True, exist_ok=True)
    from paperlab.io.atomic import atomic_write_text

    atomic_write_text(out / "grpo_log.json", json.dumps(history, indent=2, default=str))
    return history


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default=None, help="HF model dir (default: packaged SmolLM2)")
    ap.add_argument("--data", type=Path, default=None, help="BEIR dir (default: built-in sample)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--num-generations", type=int, default=2)
    ap.add_argument("--max-completion-length", type=int, default=48)
    ap.add_argument("--gpu", action="store_true", help="train on the GPU (default: CPU)")
    ap.add_argument("--smoke", action="store_true", help="CPU, built-in sample, 2 steps")
    a = ap.parse_args(argv)
    if a.smoke:
        a.steps, a.data, a.gpu = 2, None, False
    hist = train(a.out, a.model, a.data, a.steps, a.group_size, a.num_generations,
                 a.max_completion_length, use_cpu=not a.gpu)
    for row in hist["log"]:
        print(json.dumps({k: v for k, v in row.items() if "reward" in k or k in ("step", "loss", "train_runtime")}))


if __name__ == "__main__":
    main()
