"""icl fixtures: a tiny real DNA-style model trained in seconds to solve the identity task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    """Torch threads as a command sizes them (paperlab.threads.set_threads)."""
    from paperlab.threads import set_threads

    set_threads()


@pytest.fixture(scope="session")
def copy_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    """A 2-layer char-level Llama trained ~150 steps on nucleotide identity prompts.

    It solves identity prompts most of the time and fails on others, so scorers have real
    hits *and* misses to agree (or disagree) on. Saved as a safetensors model directory.
    """
    import torch

    from paperlab.icl.dnamodel import DNAModelConfig, build_model, build_tokenizer, save_model
    from paperlab.icl.encodings import get_encoding
    from paperlab.icl.prompts import build_prompt_sets
    from paperlab.icl.tasks import get_function

    torch.manual_seed(0)
    tok = build_tokenizer()
    cfg = DNAModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, context=128, seed=0)
    model = build_model(cfg)
    f = get_function("identity")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(150):
        sets = build_prompt_sets([f], get_encoding("nucleotide"), n_prompts=16, max_shots=6, seed=step)
        x = torch.tensor([tok(ps.prefix_text(6), add_special_tokens=False)["input_ids"] for ps in sets])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = save_model(model, tmp_path_factory.mktemp("copy") / "model", {"note": "test copy model"})
    return model, tok, path
