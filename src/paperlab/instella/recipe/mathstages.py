"""Instella-Math's SFT stages, and the exact-match measurement the math stages report.

AMD starts Instella-Math from Instella-3B-Instruct: SFT stage 1 on OpenMathInstruct-2 at 4K
tokens (``instella-3b-sft-math-stage1.yaml``: lr 2e-5, twice the instruct SFT's, 500 warm-up
steps, linear to 0.001x, 3 epochs), SFT stage 2 on long distilled reasoning traces at 32K, then
GRPO (:mod:`.grpo`). Offline there are no distilled traces: stage 2 trains on the same problems
with each calculation followed by its check (:func:`reasoning_trace`), at 8x the context.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from paperlab.instella.recipe import data as D
from paperlab.instella.recipe.evaluate import exact_match_outcomes
from paperlab.instella.recipe.instruct import sft_stage

if TYPE_CHECKING:
    from paperlab.instella.recipe.stages import Recipe

_CALC = re.compile(r"(\d+(?:\.\d+)?)\s*([-+*/x×])\s*(\d+(?:\.\d+)?)\s*=\s*\$?(-?\d+(?:\.\d+)?)")
_INVERSE = {"+": "-", "-": "+", "*": "/", "x": "/", "×": "/", "/": "*"}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _apply(a: float, op: str, b: float) -> float | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "*x×":
        return a * b
    return a / b if b else None


def reasoning_trace(p: D.Problem) -> str:
    """The solution with a check after each line that computes ``a op b = c``: ``c inv b = a``,
    written only where it holds (a longer trace that verifies itself; the answer is unchanged)."""
    lines = []
    for line in p.solution.splitlines():
        lines.append(line)
        checks = []
        for m in _CALC.finditer(line):
            a, op, b, c = float(m.group(1)), m.group(2), float(m.group(3)), float(m.group(4))
            back = _apply(c, _INVERSE[op], b)
            if back is not None and abs(back - a) < 1e-9 and _apply(a, op, b) == c:
                checks.append(f"{_num(c)} {_INVERSE[op]} {_num(b)} = {_num(a)}")
        if checks:
            lines.append("Check: " + "; ".join(checks) + ".")
    return "\n".join(lines)


def exact_match_scores(r: Recipe, model: Any) -> list[int]:
    """1/0 per held-out problem (``eval.math_problems`` of them): the greedy chat reply's answer
    after ``####`` equals the reference."""
    e = r.cfg.eval
    return exact_match_outcomes(model, r.tok, r.math_test[: e.math_problems], chat=True,
                                max_new_tokens=e.math_new_tokens)


def wilson_ci(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion k/n."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def paired_difference_ci(before: list[int], after: list[int], seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval (10,000 resamples of the problems) of mean(after - before)."""
    import numpy as np
    from scipy.stats import bootstrap

    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    if np.all(d == d[0]):  # no spread: every resample gives the same mean
        return float(d[0]), float(d[0])
    res = bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=10_000, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def exact_match_summary(scores: list[int]) -> dict[str, Any]:
    k, n = sum(scores), len(scores)
    return {"exact_match": k / n, "exact_match_ci95": wilson_ci(k, n), "problems": n}


def stage_math_sft1(r: Recipe) -> None:
    """Math SFT 1: the worked solutions in the chat format at the short context."""
    if r.done("math_sft1"):
        return
    examples = r.chat_examples(r.math_train, r.cfg.model.seq_len)
    sft_stage(r, "math_sft1", r.input_for("math_sft1"), r.cfg.math_sft1, examples, 5,
              extra=lambda m: {"math": exact_match_summary(exact_match_scores(r, m))})


def stage_math_sft2(r: Recipe) -> None:
    """Math SFT 2: self-checking traces at ``math_sft2_factor`` x the context (AMD: 4K -> 32K)."""
    if r.done("math_sft2"):
        return
    src = r.input_for("math_sft2")
    T = r.cfg.model.seq_len * r.cfg.math_sft2_factor
    model = r.load(src)
    model.config.max_position_embeddings = max(T, int(model.config.max_position_embeddings))
    examples = r.chat_examples(r.math_train, T, solution=reasoning_trace)
    sft_stage(r, "math_sft2", src, r.cfg.math_sft2, examples, 6, model=model,
              extra=lambda m: {"context": T, "math": exact_match_summary(exact_match_scores(r, m))})
