"""The recipe, stage by stage: pretrain -> stage2 x seeds -> soup -> sft -> dpo -> long.

Layout of ``OUT``:

    tokenizer/                 the tokenizer every stage uses (trained BPE or the released one)
    pretrain/checkpoint/       one loadable native Instella checkpoint per stage (with tokenizer)
    stage2/seed-5796/checkpoint/ ... one per seed
    soup/checkpoint/           the uniform average, written by paperlab.soup's merge engine
    sft/ dpo/ long/            ...
    <stage>/.state/            resumable training state (removed when the stage completes)
    report.json, report.png    measurements after every stage

A stage whose checkpoint exists is skipped (its metrics are kept in report.json), so rerunning
the same command after a crash or Ctrl-C resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from paperlab.instella.errors import InstellaConfigError
from paperlab.instella.recipe import data as D
from paperlab.instella.recipe.config import NEEDS, RecipeConfig, check_stage_inputs
from paperlab.instella.recipe.evaluate import (
    encode_pair,
    gsm8k_exact_match,
    heldout_math_loss,
    heldout_text_loss,
    pad_batch,
    preference_stats,
)
from paperlab.instella.recipe.losses import (
    length_normalised_dpo_loss,
    masked_lm_sum,
    sequence_logprobs,
)
from paperlab.instella.recipe.train import stage_spec
from paperlab.train import (
    DistContext,
    FnTask,
    LossParts,
    TrainResult,
    Wrapped,
    full_state_dict,
    run_training,
    sample_generator,
    single_process,
)

log = logging.getLogger(__name__)
CHAT_STAGES = ("sft", "dpo", "long")
Batch = dict[str, torch.Tensor]


class Recipe:
    """One recipe run into ``out`` (see the module docstring for the layout).

    Under torchrun every rank runs the recipe: training is sharded over the ranks (the global
    batch of each stage is split by sample index), while rank 0 alone writes the tokenizer,
    the checkpoints, the soup and the report and runs the evaluations, the others waiting.
    """

    def __init__(self, cfg: RecipeConfig, out: str | Path, *, from_dir: str | Path | None = None,
                 console: Any = None, ctx: DistContext | None = None) -> None:
        self.cfg, self.out, self.console = cfg, Path(out), console
        self.from_dir = Path(from_dir) if from_dir is not None else None
        check_stage_inputs(cfg, self.from_dir)
        if self.from_dir is not None and not (self.from_dir / "config.json").is_file():
            raise InstellaConfigError(f"--from {self.from_dir} is not a checkpoint directory (no config.json)")
        self.ctx = ctx if ctx is not None else single_process(cfg.device)
        self.device = self.ctx.device
        self.bf16 = cfg.bf16_autocast and self.device.type == "cuda"
        # data: loaded (and checked) before anything is written
        self.text_train, self.text_held = D.stage1_text(cfg.corpus)
        self.math_train, self.math_test, self.math_source = D.math_problems(cfg.gsm8k, cfg.seed)
        self.report: dict[str, Any] = {}

    # -- set-up ---------------------------------------------------------------------------
    def _tokenizer(self) -> Any:
        """Rank 0 makes (or finds) the run's tokenizer; the other ranks read what it wrote."""
        path = self.out / "tokenizer"
        if self.ctx.is_main:
            self._make_tokenizer(path)
        self.ctx.barrier()
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)

    def _make_tokenizer(self, path: Path) -> None:
        if (path / "tokenizer.json").is_file():
            return
        if self.from_dir is not None and (self.from_dir / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.from_dir)
        elif self.cfg.tokenizer == "bpe":
            sample = [self.text_train] + [D.raw_math(p) for p in self.math_train[:2000]]
            tok = D.train_bpe(sample, self.cfg.bpe_vocab)
        else:
            from paperlab.instella.tokenizer import load_tokenizer

            tok = load_tokenizer()
        from paperlab.io.atomic import atomic_directory

        with atomic_directory(path, force=True) as tmp:
            tok.save_pretrained(tmp)

    def _new_model(self) -> Any:
        from paperlab.instella.configuration import InstellaConfig
        from paperlab.instella.modeling import InstellaForCausalLM

        m = self.cfg.model
        vocab = -(-len(self.tok) // 64) * 64  # padded to a multiple of 64, as released (50,304)
        config = InstellaConfig(
            vocab_size=vocab, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
            num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
            num_key_value_heads=m.num_key_value_heads or m.num_attention_heads,
            max_position_embeddings=m.seq_len, bos_token_id=self.tok.bos_token_id,
            eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id,
        )
        torch.manual_seed(self.cfg.seed)
        model = InstellaForCausalLM(config)
        model.to(self.device)  # type: ignore[arg-type]  # transformers wraps .to; torch's semantics
        return model

    def _load(self, path: Path) -> Any:
        from paperlab.instella.checkpoint import load_model

        return load_model(path, device=str(self.device), dtype="float32")

    def _save(self, model: Any, path: Path) -> None:
        from paperlab.instella.checkpoint import save_checkpoint

        save_checkpoint(model, path, tokenizer=self.tok, force=True, max_shard_size="2GB")

    def _ckpt(self, stage: str, seed: int | None = None) -> Path:
        base = self.out / stage / (f"seed-{seed}" if seed is not None else "")
        return base / "checkpoint"

    def _input_for(self, stage: str) -> Path:
        for prev in NEEDS[stage]:
            if prev == "stage2":
                continue  # stage2 feeds the soup only
            if self._ckpt(prev).is_dir() and (prev in self.cfg.stages or self.from_dir is None):
                return self._ckpt(prev)
        if self.from_dir is not None:
            return self.from_dir
        raise InstellaConfigError(f"stage {stage!r} found no input checkpoint under {self.out}")

    # -- batches --------------------------------------------------------------------------
    # Every sample's randomness comes from (stream seed, step, global sample index), so one
    # process and N processes draw the same batches (paperlab.train.seeds).
    def _pick(self, seed: int, step: int, i: int, n: int) -> int:
        """Sample ``i``'s uniform choice in [0, n) at ``step``."""
        return int(torch.randint(0, n, (1,), generator=sample_generator(seed, step, i)))

    def _windows(self, ids: torch.Tensor, seed: int, step: int, rows: range, T: int) -> torch.Tensor:
        starts = [self._pick(seed, step, i, ids.numel() - T - 1) for i in rows]
        return torch.stack([ids[s : s + T] for s in starts])  # (rows, T)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        rp = self.out / "report.json"
        if rp.is_file():
            self.report = json.loads(rp.read_text())
        self.tok = self._tokenizer()
        self.tok.padding_side = "right"
        # the fast backend directly: the same ids, without transformers' warning that a whole
        # corpus is longer than the model's context (it is cut into windows later)
        backend = self.tok.backend_tokenizer
        enc = lambda s: torch.tensor(backend.encode(s, add_special_tokens=False).ids, dtype=torch.long)  # noqa: E731
        self.text_ids, self.held_ids = enc(self.text_train), enc(self.text_held)
        eos = self.tok.eos_token
        self.math_ids = enc(eos.join(D.raw_math(p) for p in self.math_train) + eos)
        self.report.setdefault("data", {}).update(
            corpus=self.cfg.corpus, corpus_tokens=int(self.text_ids.numel()), math=self.math_source,
            tokenizer=(f"byte-level BPE, {len(self.tok)} tokens, trained here" if self.cfg.tokenizer == "bpe"
                       else "released Instella tokenizer (GPT-NeoX-20B + PII, 50,280 tokens)"),
        )
        self.report["config"] = self.cfg.model_dump(mode="json")
        for stage in self.cfg.stages:
            getattr(self, f"_stage_{stage}")()
            self._main_only(self._write_report)
        self._main_only(self._plot)
        return self.report

    def _main_only(self, fn: Any, *args: Any, **kw: Any) -> None:
        """Run ``fn`` on rank 0 while the other ranks wait for it."""
        if self.ctx.is_main:
            fn(*args, **kw)
        self.ctx.barrier()

    def _done(self, key: str) -> bool:
        return key in self.report.get("stages", {}) and self._ckpt_for_key(key).is_dir()

    def _ckpt_for_key(self, key: str) -> Path:
        if key.startswith("stage2/seed-"):
            return self._ckpt("stage2", int(key.split("-")[-1]))
        return self._ckpt(key)

    def _train_stage(self, key: str, model: Any, settings: Any, schedule: str,
                     make_batch: Any, loss_fn: Any) -> tuple[Wrapped, TrainResult]:
        """Train one stage with the shared loop (sharded under torchrun, resumable)."""
        spec = stage_spec(self.cfg, settings, schedule, label=key, bf16=self.bf16)
        fingerprint = {"stage": key, "model": model.config.to_diff_dict(), "settings": settings.model_dump(),
                       "schedule": schedule, "seed": self.cfg.seed, "weight_decay": self.cfg.weight_decay}
        return run_training(model, FnTask(make_batch, loss_fn), spec, self.ctx, state_dir=self.out / key / ".state",
                            fingerprint=fingerprint, console=self.console)

    def _whole(self, w: Wrapped) -> Any:
        """The trained model whole on rank 0 (None elsewhere); every rank must call it."""
        if w.mode != "fsdp":
            return w.module if self.ctx.is_main else None
        full = full_state_dict(w)  # a collective: FSDP gathers the shards on rank 0
        if not self.ctx.is_main:
            return None
        from paperlab.instella.modeling import InstellaForCausalLM

        model = InstellaForCausalLM(w.module.config)  # type: ignore[arg-type]  # an Instella module
        model.load_state_dict(full)
        return model.to(self.device).eval()  # type: ignore[arg-type]

    def _finish(self, key: str, trained: Wrapped | Any, stats: TrainResult | None, *, chat: bool,
                extra: dict[str, Any] | None = None, ref: Any = None) -> None:
        """Save the stage's consolidated checkpoint and measure it (rank 0; the others wait)."""
        model = self._whole(trained) if isinstance(trained, Wrapped) else trained
        if self.ctx.is_main:
            self._save(model, self._ckpt_for_key(key))
            shutil.rmtree(self.out / key / ".state", ignore_errors=True)
            metrics = self._evaluate(model, chat=chat, ref=ref)
            entry = {"checkpoint": str(self._ckpt_for_key(key)), **metrics, **(extra or {})}
            if stats is not None:
                entry.update(train=asdict(stats))
            self.report.setdefault("stages", {})[key] = entry
            self._write_report()
            log.info("%s: %s", key, metrics)
        self.report = self.ctx.broadcast(self.report)

    def _evaluate(self, model: Any, *, chat: bool, ref: Any = None) -> dict[str, float]:
        e, T = self.cfg.eval, self.cfg.model.seq_len
        model.eval()
        pairs = self._pairs(self.math_test[: e.pairs], chat)
        acc, margin = preference_stats(model, ref, self.tok, pairs, T, self.cfg.dpo_beta)
        return {
            "heldout_loss_text": heldout_text_loss(model, self.held_ids, T, e.heldout_windows),
            "heldout_loss_gsm8k": heldout_math_loss(model, self.tok, self.math_test[: e.heldout_windows * 4], T),
            "gsm8k_exact_match": gsm8k_exact_match(model, self.tok, self.math_test[: e.gsm8k_problems], chat=chat,
                                                   max_new_tokens=e.max_new_tokens),
            "preference_accuracy": acc,
            "reward_margin": margin,
        }

    def _pairs(self, problems: list[D.Problem], chat: bool) -> list[tuple[str, str, str]]:
        rng = random.Random(self.cfg.seed + 17)
        out = []
        for p in problems:
            if chat:
                prompt = self.tok.apply_chat_template([{"role": "user", "content": p.question}], tokenize=False,
                                                      add_generation_prompt=True)
                suffix = self.tok.eos_token
            else:
                prompt, suffix = f"Question: {p.question}\nAnswer: ", ""
            out.append((prompt, p.solution + suffix, D.corrupt(p, rng).solution + suffix))
        return out

    # -- stages -----------------------------------------------------------------------------
    def _lm_loss(self, model: Any, batch: Batch) -> LossParts:
        ids = batch["ids"].to(self.device)
        total, count = masked_lm_sum(model(ids, use_cache=False).logits, ids, batch["mask"].to(self.device))
        return LossParts(total, count, tokens=int(ids.numel()))

    def _stage_pretrain(self) -> None:
        if self._done("pretrain"):
            return
        s, T = self.cfg.pretrain, self.cfg.model.seq_len

        def batch(step: int, rows: range) -> Batch:
            ids = self._windows(self.text_ids, self.cfg.seed, step, rows, T)
            return {"ids": ids, "mask": torch.ones_like(ids)}

        w, stats = self._train_stage("pretrain", self._new_model(), s, "cosine", batch, self._lm_loss)
        self._finish("pretrain", w, stats, chat=False)

    def _stage_stage2(self) -> None:
        base = self._ckpt("pretrain") if self._ckpt("pretrain").is_dir() else self.from_dir
        if base is None:
            raise InstellaConfigError("stage2 needs the pretrain checkpoint; run pretrain first or pass --from DIR")
        s, T = self.cfg.stage2, self.cfg.model.seq_len
        for seed in self.cfg.seeds:
            key = f"stage2/seed-{seed}"
            if self._done(key):
                continue

            # the last general_fraction of each global batch is stage-1 text, the rest math
            n_math = s.batch - int(round(s.batch * self.cfg.general_fraction))

            def batch(step: int, rows: range, seed: int = seed, n_math: int = n_math) -> Batch:
                ids = torch.stack([
                    self._windows(self.math_ids if i < n_math else self.text_ids, seed, step, range(i, i + 1), T)[0]
                    for i in rows])
                return {"ids": ids, "mask": torch.ones_like(ids)}

            torch.manual_seed(seed)
            w, stats = self._train_stage(key, self._load(base), s, "linear", batch, self._lm_loss)
            self._finish(key, w, stats, chat=False, extra={"seed": seed})

    def _stage_soup(self) -> None:
        if self._done("soup"):
            return
        self._main_only(self._make_soup)
        self.report = self.ctx.broadcast(self.report)

    def _make_soup(self) -> None:
        from paperlab.soup import MergeSpec, ModelEntry, merge_checkpoints

        t0 = time.perf_counter()
        seeds = [self._ckpt("stage2", s) for s in self.cfg.seeds]
        spec = MergeSpec(method="linear", models=[ModelEntry(model=str(p), weight=1.0) for p in seeds])
        merge_checkpoints(spec, self._ckpt("soup"), force=True)
        model = self._load(self._ckpt("soup"))
        metrics = self._evaluate(model, chat=False)
        seed_rows = [self.report["stages"][f"stage2/seed-{s}"] for s in self.cfg.seeds]
        compare: dict[str, Any] = {}
        for k in ("heldout_loss_text", "heldout_loss_gsm8k"):
            vals = [r[k] for r in seed_rows]
            compare[k] = {"seeds": vals, "mean_of_seeds": sum(vals) / len(vals), "best_seed": min(vals),
                          "soup": metrics[k], "soup_below_mean": metrics[k] < sum(vals) / len(vals),
                          "soup_below_best": metrics[k] < min(vals)}
        self.report.setdefault("stages", {})["soup"] = {
            "checkpoint": str(self._ckpt("soup")), **metrics, "merge": "paperlab.soup linear, uniform weights",
            "seconds": time.perf_counter() - t0, "soup_vs_seeds": compare,
        }

    def _sft_examples(self) -> list[tuple[list[int], list[int]]]:
        T, eos = self.cfg.model.seq_len, self.tok.eos_token
        out = []
        for p in self.math_train:
            prompt = self.tok.apply_chat_template([{"role": "user", "content": p.question}], tokenize=False,
                                                  add_generation_prompt=True)
            out.append(encode_pair(self.tok, prompt, p.solution + eos, T))
        return out

    def _stage_sft(self) -> None:
        if self._done("sft"):
            return
        s = self.cfg.sft
        examples = self._sft_examples()

        def batch(step: int, rows: range) -> Batch:
            picked = [examples[self._pick(self.cfg.seed + 1, step, i, len(examples))] for i in rows]
            ids, mask = pad_batch(picked, self.tok.pad_token_id)
            return {"ids": ids, "mask": mask}

        w, stats = self._train_stage("sft", self._load(self._input_for("sft")), s, "linear", batch, self._lm_loss)
        self._finish("sft", w, stats, chat=True)

    def _stage_dpo(self) -> None:
        if self._done("dpo"):
            return
        s, T, beta = self.cfg.dpo, self.cfg.model.seq_len, self.cfg.dpo_beta
        src = self._input_for("dpo")
        ref = self._load(src).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        train_pairs = self._pairs(self.math_train, chat=True)
        encoded = [(encode_pair(self.tok, pr, c, T), encode_pair(self.tok, pr, r, T)) for pr, c, r in train_pairs]

        def batch(step: int, rows: range) -> Batch:
            # one sample is one (chosen, rejected) pair: chosen rows first, then rejected
            idx = [self._pick(self.cfg.seed + 2, step, i, len(encoded)) for i in rows]
            ids, mask = pad_batch([encoded[i][0] for i in idx] + [encoded[i][1] for i in idx], self.tok.pad_token_id)
            return {"ids": ids, "mask": mask}

        def loss(model: Any, b: Batch) -> LossParts:
            ids, mask = b["ids"].to(self.device), b["mask"].to(self.device)
            n = ids.shape[0] // 2
            lp, ln = sequence_logprobs(model(ids, use_cache=False).logits, ids, mask)
            with torch.no_grad():
                rp, _ = sequence_logprobs(ref(ids, use_cache=False).logits, ids, mask)
            mean, _ = length_normalised_dpo_loss(lp[:n], lp[n:], rp[:n], rp[n:], ln[:n], ln[n:], beta)
            return LossParts(mean * n, n, tokens=int(mask.sum()))  # summed over this rank's pairs

        w, stats = self._train_stage("dpo", self._load(src), s, "linear", batch, loss)
        self._finish("dpo", w, stats, chat=True, extra={"reference": str(src), "beta": beta}, ref=ref)

    def _stage_long(self) -> None:
        if self._done("long"):
            return
        s, f = self.cfg.long, self.cfg.long_factor
        model = self._load(self._input_for("long"))
        cfg = model.config
        T = self.cfg.model.seq_len * f
        d = int(cfg.head_dim)
        theta = self.cfg.long_rope_theta or cfg.rope_base * f ** (d / (d - 2))  # NTK-style base raise
        cfg.set_rope_theta(theta)
        cfg.max_position_embeddings = T

        def batch(step: int, rows: range) -> Batch:
            ids = self._windows(self.text_ids, self.cfg.seed + 3, step, rows, T)
            return {"ids": ids, "mask": torch.ones_like(ids)}

        windows = max(1, self.cfg.eval.heldout_windows // f)
        before = heldout_text_loss(model, self.held_ids, T, windows) if self.ctx.is_main else float("nan")
        w, stats = self._train_stage("long", model, s, "linear", batch, self._lm_loss)
        whole = self._whole(w)
        after = heldout_text_loss(whole, self.held_ids, T, windows) if self.ctx.is_main else float("nan")
        self._finish("long", whole, stats, chat=True, extra={
            "rope_theta": theta, "context": T, "heldout_loss_text_long_before": before,
            "heldout_loss_text_long_after": after})

    # -- report -------------------------------------------------------------------------------
    def _write_report(self) -> None:
        from paperlab.io.atomic import atomic_write_text

        atomic_write_text(self.out / "report.json", json.dumps(self.report, indent=2))

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        stages = self.report.get("stages", {})
        if not stages:
            return
        names = list(stages)
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for ax, key, title in ((axes[0], "heldout_loss_text", "held-out stage-1 text loss"),
                               (axes[1], "heldout_loss_gsm8k", "held-out GSM8K solution loss")):
            vals = [stages[n][key] for n in names]
            colors = ["tab:orange" if n == "soup" else "tab:blue" for n in names]
            ax.bar(range(len(names)), vals, color=colors)
            ax.set_xticks(range(len(names)), [n.replace("stage2/", "") for n in names], rotation=35, ha="right",
                          fontsize=8)
            ax.set_title(title)
            ax.set_ylim(min(vals) * 0.95, max(vals) * 1.02)
        fig.tight_layout()
        import io

        from paperlab.io.atomic import atomic_write_bytes

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write_bytes(self.out / "report.png", buf.getvalue())


def run_recipe(cfg: RecipeConfig, out: str | Path, *, from_dir: str | Path | None = None,
               console: Any = None, ctx: DistContext | None = None) -> dict[str, Any]:
    """Run the configured stages into ``out`` and return the report (also OUT/report.json).

    ``ctx``: this process's place in a torchrun launch (:func:`paperlab.train.init_distributed`);
    default a single process on ``cfg.device``.
    """
    return Recipe(cfg, out, from_dir=from_dir, console=console, ctx=ctx).run()


__all__ = ["Recipe", "run_recipe"]
