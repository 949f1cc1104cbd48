"""MMaDA-Parallel ("paradiff"): one bidirectional masked-diffusion transformer over reasoning text
and image tokens, decoded in parallel, on a procedural thinking-aware editing task.

Modules, one concept each::

    scene     shapes on a grid: renderer and exact detector
    task      prompts, the reasoning grammar and parser, the vocabulary
    vq        the patch VQ-VAE image tokenizer
    model     the joint transformer and the sequence layout
    tokens    examples <-> token sequences
    train     masked-diffusion training and the model cache
    schedule  when the samplers commit words and codes (the release's schedules)
    sampler   parallel / sequential / image-only samplers, trajectory recorder
    bench     the ParaBench-style benchmark; stats: bootstrap intervals, McNemar's test
    scorer    the learned text-image reward; rl, rl_bench: ParaRL and its comparison
    pipeline  one prompt end to end; images: image files, GIFs and strips
    cli, demo the command line and the demo section

Public names are loaded lazily so that importing the package stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PRESETS", "SAMPLERS", "decode_prompt", "ensure_model", "get_preset", "run_bench", "sample"]

_WHERE = {
    "PRESETS": "config", "get_preset": "config", "SAMPLERS": "sampler", "sample": "sampler",
    "ensure_model": "train", "run_bench": "bench", "decode_prompt": "pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"paperlab.paradiff.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'paperlab.paradiff' has no attribute {name!r}")
