"""One recipe run: the shared set-up, training, saving and measuring that every stage uses.

The stages themselves live by family: :mod:`.instruct` (pretrain -> stage2 x seeds -> soup ->
sft -> dpo), :mod:`.longctx` (long phases -> long_sft -> long_dpo) and :mod:`.mathstages` /
:mod:`.grpo` (math_sft1 -> math_sft2 -> grpo). Layout of ``OUT``:

    tokenizer/                   the tokenizer every stage uses (trained BPE or the released one)
    pretrain/checkpoint/         one loadable native Instella checkpoint per stage (with tokenizer)
    stage2/seed-5796/checkpoint/ ... one per seed
    soup/checkpoint/             the uniform average, written by paperlab.soup's merge engine
    sft/ dpo/                    ...
    long/phase-1/ long/phase-2/  the long-context phases; long_sft/ long_dpo/ after them
    math_sft1/ math_sft2/ grpo/  Instella-Math
    <key>/.state/                resumable training state (removed when the stage completes)
    report.json, report.png      measurements after every stage

A stage whose checkpoint exists is skipped (its metrics are kept in report.json), so rerunning
the same command after a crash or Ctrl-C resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from paperlab.instella.errors import InstellaConfigError
from paperlab.instella.recipe import data as D
from paperlab.instella.recipe.config import NEEDS, RecipeConfig, StageSettings, check_stage_inputs
from paperlab.instella.recipe.evaluate import (
    chat_prompt,
    chat_reply,
    encode_pair,
    gsm8k_exact_match,
    heldout_chat_loss,
    heldout_math_loss,
    heldout_text_loss,
    preference_stats,
)
from paperlab.instella.recipe.losses import masked_lm_sum
from paperlab.instella.recipe.report import plot_report
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
        if self.from_dir is not None:  # another architecture or a damaged one: refused before writing
            from paperlab.instella.checkpoint import check_checkpoint

            check_checkpoint(self.from_dir)
        self.ctx = ctx if ctx is not None else single_process(cfg.device)
        self.device = self.ctx.device
        self.bf16 = cfg.bf16_autocast and self.device.type == "cuda"
        # data: loaded (and checked) before anything is written
        self.text_train, self.text_held = D.stage1_text(cfg.corpus)
        self.math_train, self.math_test, self.math_source = D.math_problems(cfg.gsm8k, cfg.seed)
        if self.math_source.startswith("synthetic"):
            # the same generator and seeds with the run's operand range (small enough for the
            # tiny model to solve some: the reward GRPO needs must be reachable), and as many
            # test problems as the evaluation asks for
            self.math_train = D.synthetic_problems(len(self.math_train), cfg.seed, high=cfg.synthetic_max)
            n_test = max(len(self.math_test), cfg.eval.math_problems)
            self.math_test = D.synthetic_problems(n_test, cfg.seed + 1, high=cfg.synthetic_max)
            self.math_source += f", operands up to {cfg.synthetic_max}"
        self._check_long_context()
        self.report: dict[str, Any] = {}

    def _check_long_context(self) -> None:
        """Refuse, before anything is written, a long context longer than the held-out text
        (a token holds at least one byte, so fewer bytes than tokens cannot fit)."""
        longest = max((self.cfg.model.seq_len * p.factor for p in self.cfg.long_phases), default=0)
        held = len(self.text_held.encode("utf-8"))
        if {"long", "long_sft"} & set(self.cfg.stages) and held <= longest + 1:
            raise InstellaConfigError(
                f"the long context of {longest} tokens does not fit the held-out tenth of corpus "
                f"{self.cfg.corpus} ({held} bytes); give a longer --corpus or smaller long_phases factors")

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

    def new_model(self) -> Any:
        """A freshly initialised model of the configured shape (seeded: the same on every rank)."""
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

    def load(self, path: Path) -> Any:
        from paperlab.instella.checkpoint import load_model

        return load_model(path, device=str(self.device), dtype="float32")

    def _save(self, model: Any, path: Path) -> None:
        from paperlab.instella.checkpoint import save_checkpoint

        save_checkpoint(model, path, tokenizer=self.tok, force=True, max_shard_size="2GB")

    def ckpt(self, key: str) -> Path:
        """Where the checkpoint of report key ``key`` ("sft", "stage2/seed-5796", ...) lives."""
        return self.out / key / "checkpoint"

    def output_of(self, stage: str) -> Path:
        """The checkpoint a stage hands on (the long stage: its last phase's)."""
        if stage == "long":
            return self.ckpt(f"long/phase-{len(self.cfg.long_phases)}")
        return self.ckpt(stage)

    def input_for(self, stage: str) -> Path:
        """The checkpoint ``stage`` starts from: the nearest earlier stage's, else ``--from``."""
        for prev in NEEDS[stage]:
            if prev == "stage2":
                continue  # stage2 feeds the soup only
            if self.output_of(prev).is_dir() and (prev in self.cfg.stages or self.from_dir is None):
                return self.output_of(prev)
        if self.from_dir is not None:
            return self.from_dir
        raise InstellaConfigError(f"stage {stage!r} found no input checkpoint under {self.out}")

    # -- batches --------------------------------------------------------------------------
    # Every sample's randomness comes from (stream seed, step, global sample index), so one
    # process and N processes draw the same batches (paperlab.train.seeds).
    def pick(self, seed: int, step: int, i: int, n: int) -> int:
        """Sample ``i``'s uniform choice in [0, n) at ``step``."""
        return int(torch.randint(0, n, (1,), generator=sample_generator(seed, step, i)))

    def windows(self, ids: torch.Tensor, seed: int, step: int, rows: range, T: int) -> torch.Tensor:
        starts = [self.pick(seed, step, i, ids.numel() - T - 1) for i in rows]
        return torch.stack([ids[s : s + T] for s in starts])  # (rows, T)

    def chat_examples(self, problems: list[D.Problem], T: int,
                      solution: Callable[[D.Problem], str] | None = None) -> list[tuple[list[int], list[int]]]:
        """(ids, loss mask) of each problem in the instruct chat format; loss on the reply only."""
        eos = self.tok.eos_token
        return [encode_pair(self.tok, chat_prompt(self.tok, p.question), (solution or (lambda q: q.solution))(p) + eos, T)
                for p in problems]

    def lm_loss(self, model: Any, batch: Batch) -> LossParts:
        ids = batch["ids"].to(self.device)
        total, count = masked_lm_sum(model(ids, use_cache=False).logits, ids, batch["mask"].to(self.device))
        return LossParts(total, count, tokens=int(ids.numel()))

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from paperlab.instella.recipe.grpo import stage_grpo
        from paperlab.instella.recipe.instruct import (
            stage_dpo,
            stage_pretrain,
            stage_sft,
            stage_soup,
            stage_stage2,
        )
        from paperlab.instella.recipe.longctx import stage_long, stage_long_dpo, stage_long_sft
        from paperlab.instella.recipe.mathstages import stage_math_sft1, stage_math_sft2

        stages: dict[str, Callable[[Recipe], None]] = {
            "pretrain": stage_pretrain, "stage2": stage_stage2, "soup": stage_soup, "sft": stage_sft,
            "dpo": stage_dpo, "long": stage_long, "long_sft": stage_long_sft, "long_dpo": stage_long_dpo,
            "math_sft1": stage_math_sft1, "math_sft2": stage_math_sft2, "grpo": stage_grpo,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        rp = self.out / "report.json"
        if rp.is_file():
            self.report = json.loads(rp.read_text())
        self.tok = self._tokenizer()
        self.tok.padding_side = "right"
        # the fast backend directly: the same ids, without transformers' warning that a whole
        # corpus is longer than the model's context (it is cut into windows later)
        self.text_ids, self.held_ids = self.encode(self.text_train), self.encode(self.text_held)
        eos = self.tok.eos_token
        self.math_ids = self.encode(eos.join(D.raw_math(p) for p in self.math_train) + eos)
        self.report.setdefault("data", {}).update(
            corpus=self.cfg.corpus, corpus_tokens=int(self.text_ids.numel()), math=self.math_source,
            tokenizer=(f"byte-level BPE, {len(self.tok)} tokens, trained here" if self.cfg.tokenizer == "bpe"
                       else "released Instella tokenizer (GPT-NeoX-20B + PII, 50,280 tokens)"),
        )
        self.report["config"] = self.cfg.model_dump(mode="json")
        for stage in self.cfg.stages:
            stages[stage](self)
            self.main_only(self.write_report)
        self.main_only(lambda: plot_report(self.report, self.out / "report.png"))
        return self.report

    def encode(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` (no special tokens), as a 1-D tensor."""
        return torch.tensor(self.tok.backend_tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.long)

    def main_only(self, fn: Any, *args: Any, **kw: Any) -> None:
        """Run ``fn`` on rank 0 while the other ranks wait for it."""
        if self.ctx.is_main:
            fn(*args, **kw)
        self.ctx.barrier()

    def done(self, key: str) -> bool:
        return key in self.report.get("stages", {}) and self.ckpt(key).is_dir()

    def train_stage(self, key: str, stage: str, model: Any, settings: StageSettings, make_batch: Any,
                    loss_fn: Any, *, micro_batch: int | None = None, task: Any = None) -> tuple[Wrapped, TrainResult]:
        """Train one stage with the shared loop (sharded under torchrun, resumable).

        ``stage`` names AMD's schedule and weight decay for it (:data:`.train.SCHEDULES`);
        ``task`` replaces ``FnTask(make_batch, loss_fn)`` for a task with state (GRPO).
        """
        spec = stage_spec(self.cfg, settings, stage, label=key, bf16=self.bf16, micro_batch=micro_batch)
        fingerprint = {"stage": key, "model": model.config.to_diff_dict(), "settings": settings.model_dump(),
                       "schedule": spec.schedule.kind, "seed": self.cfg.seed,
                       "weight_decay": spec.optim.weight_decay, "decay_all": spec.optim.no_decay is None}
        return run_training(model, task or FnTask(make_batch, loss_fn), spec, self.ctx,
                            state_dir=self.out / key / ".state", fingerprint=fingerprint, console=self.console)

    def whole(self, w: Wrapped) -> Any:
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

    def finish(self, key: str, trained: Wrapped | Any, stats: TrainResult | None, *, chat: bool,
               extra: dict[str, Any] | Callable[[Any], dict[str, Any]] | None = None, ref: Any = None) -> None:
        """Save the stage's consolidated checkpoint and measure it (rank 0; the others wait).

        ``extra``: more figures for the report, or a function of the trained model that gives them.
        """
        model = self.whole(trained) if isinstance(trained, Wrapped) else trained
        if self.ctx.is_main:
            self._save(model, self.ckpt(key))
            shutil.rmtree(self.out / key / ".state", ignore_errors=True)
            metrics = self.evaluate(model, chat=chat, ref=ref)
            more = extra(model) if callable(extra) else (extra or {})
            entry = {"checkpoint": str(self.ckpt(key)), **metrics, **more}
            if stats is not None:
                entry.update(train=asdict(stats))
            self.report.setdefault("stages", {})[key] = entry
            self.write_report()
            log.info("%s: %s", key, metrics)
        self.report = self.ctx.broadcast(self.report)

    def evaluate(self, model: Any, *, chat: bool, ref: Any = None) -> dict[str, Any]:
        e, T = self.cfg.eval, self.cfg.model.seq_len
        model.eval()
        pairs = self.pairs(self.math_test[: e.pairs], chat)
        acc, margin = preference_stats(model, ref, self.tok, pairs, T, self.cfg.dpo_beta)
        held = self.math_test[: e.heldout_windows * 4]
        out: dict[str, Any] = {
            "heldout_loss_text": heldout_text_loss(model, self.held_ids, T, e.heldout_windows),
            "heldout_loss_gsm8k": heldout_math_loss(model, self.tok, held, T),
            "heldout_loss_chat": heldout_chat_loss(model, self.tok, held, T),
            "gsm8k_exact_match": gsm8k_exact_match(model, self.tok, self.math_test[: e.gsm8k_problems], chat=chat,
                                                   max_new_tokens=e.max_new_tokens),
            "preference_accuracy": acc,
            "reward_margin": margin,
        }
        if chat:  # one greedy reply, to read: does the checkpoint still answer in the chat format?
            out["chat_sample"] = chat_reply(model, self.tok, self.math_test[0].question, max_new_tokens=40)
        return out

    def pairs(self, problems: list[D.Problem], chat: bool) -> list[tuple[str, str, str]]:
        """(prompt, chosen, rejected): the right solution against one with its answer changed."""
        rng = random.Random(self.cfg.seed + 17)
        out = []
        for p in problems:
            if chat:
                prompt, suffix = chat_prompt(self.tok, p.question), self.tok.eos_token
            else:
                prompt, suffix = f"Question: {p.question}\nAnswer: ", ""
            out.append((prompt, p.solution + suffix, D.corrupt(p, rng).solution + suffix))
        return out

    def write_report(self) -> None:
        """Write report.json now (rank 0 only)."""
        from paperlab.io.atomic import atomic_write_text

        atomic_write_text(self.out / "report.json", json.dumps(self.report, indent=2))


def run_recipe(cfg: RecipeConfig, out: str | Path, *, from_dir: str | Path | None = None,
               console: Any = None, ctx: DistContext | None = None) -> dict[str, Any]:
    """Run the configured stages into ``out`` and return the report (also OUT/report.json).

    ``ctx``: this process's place in a torchrun launch (:func:`paperlab.train.init_distributed`);
    default a single process on ``cfg.device``.
    """
    return Recipe(cfg, out, from_dir=from_dir, console=console, ctx=ctx).run()


__all__ = ["Recipe", "run_recipe"]
