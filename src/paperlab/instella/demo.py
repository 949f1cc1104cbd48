"""Instella's part of ``paperlab demo``: a tiny native checkpoint, written, reloaded, generating.

No download: the tiny preset has random weights in the released layout and the real
tokenizer, so the text is noise; what the demo shows is the machinery (load with plain
``AutoModelForCausalLM``, chat template, KV-cached generation that matches the full forward).
"""

from __future__ import annotations

import time
from pathlib import Path

from paperlab.demokit import DemoContext, Figure, Section, Table


def run(ctx: DemoContext) -> Section:
    """Init the tiny preset, reload it through transformers' Auto classes and generate."""
    import torch
    from transformers import AutoModelForCausalLM

    import paperlab.instella  # noqa: F401 - registers model_type "instella"
    from paperlab.instella.checkpoint import init_checkpoint, load_tokenizer_for
    from paperlab.instella.info import count_parameters
    from paperlab.threads import set_threads

    set_threads()  # the demo is a command's edge: threads are sized here, not in the library
    t0 = time.perf_counter()
    path = init_checkpoint("tiny", ctx.work_dir / "instella-tiny", seed=0, force=True)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = load_tokenizer_for(path)
    messages = [{"role": "user", "content": "Write one line about the sea."}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    n_new = 24
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)  # warm-up
        t1 = time.perf_counter()
        out = model.generate(**ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        dt = time.perf_counter() - t1
        full = model(out).logits[0, ids["input_ids"].shape[1] - 1 : -1].argmax(-1)
    new = out[0, ids["input_ids"].shape[1] :]
    agree = bool((full == new).all())
    table = Table(
        caption="Tiny Instella (random weights, released layout, real tokenizer)",
        headers=["parameters", "prompt tokens", "new tokens", "tokens/s (CPU)",
                 "greedy = argmax of full forward"],
        rows=[[f"{count_parameters(model.config):,}", ids["input_ids"].shape[1], len(new),
               f"{len(new) / dt:.0f}", "yes" if agree else "NO"]],
    )
    paragraphs = [
        "A randomly initialised tiny Instella was written with the real GPT-NeoX-20B PII "
        "tokenizer and reloaded with plain AutoModelForCausalLM (no remote code).",
        f"Chat prompt as rendered: {prompt!r}",
        f"Generated (noise, random weights): {tok.decode(new, skip_special_tokens=True)!r}",
    ]
    tables, figures = [table], []
    recipe_table, recipe_text, png = _recipe(ctx)
    tables.append(recipe_table)
    paragraphs.append(recipe_text)
    if png.is_file():
        figures.append(Figure(png, "Held-out losses after each recipe stage (orange: the soup)"))
    return Section(
        system="instella",
        title="Instella: native Hugging Face model and the recipe at tiny scale",
        paragraphs=paragraphs,
        tables=tables,
        figures=figures,
        seconds=time.perf_counter() - t0,
        status="ok" if agree else "failed",
    )


def _recipe(ctx: DemoContext) -> tuple[Table, str, Path]:
    """The whole recipe at the tiny preset, on English shipped with Python (no ../shared)."""
    from paperlab.instella.recipe.config import load_recipe_config
    from paperlab.instella.recipe.stages import run_recipe

    cfg = load_recipe_config(preset="tiny", overrides={"corpus": "pydoc", "gsm8k": "synthetic"})
    out = ctx.work_dir / "instella-recipe"
    with ctx.console.status("Instella recipe (tiny): pretrain, 3-seed stage 2, soup, SFT, DPO, long"):
        report = run_recipe(cfg, out)
    rows = []
    for name, r in report["stages"].items():
        rows.append([name, f"{r['heldout_loss_text']:.3f}", f"{r['heldout_loss_gsm8k']:.3f}",
                     f"{r['gsm8k_exact_match']:.2f}", f"{r['preference_accuracy']:.2f}",
                     f"{r['reward_margin']:+.3f}"])
    soup = report["stages"]["soup"]["soup_vs_seeds"]["heldout_loss_text"]
    text = (f"Recipe (tiny preset, {report['data']['tokenizer']}; math: {report['data']['math']}). "
            f"Soup held-out text loss {soup['soup']:.4f} against a seed mean of {soup['mean_of_seeds']:.4f} and a "
            f"best seed of {soup['best_seed']:.4f}: the soup is {_side(soup['soup_below_mean'])} the mean of "
            f"the seeds and {_side(soup['soup_below_best'])} the best seed.")
    table = Table(caption="Instella recipe, tiny preset: held-out measurements after each stage",
                  headers=["stage", "text loss", "GSM8K loss", "GSM8K EM", "pref. acc", "margin"], rows=rows)
    return table, text, out / "report.png"


def _side(below: bool) -> str:
    """Prose for a comparison of losses (lower is better)."""
    return "below" if below else "not below"
