"""Model specs for the probes: the DNA model trained here, or any ``paperlab.llm`` spec.

- ``dna`` / ``dna:tiny``: the cached DNA model of the ``default`` / ``tiny`` preset
  (train it first with ``paperlab icl train-dna [--preset tiny]``);
- ``dna:<path>``: a DNA model directory;
- anything else goes to :func:`paperlab.llm.load_llm` (``smollm2``, ``hf:<dir>``,
  ``openai:<url>#<model>``).

The scorer is picked explicitly (``--scorer``): ``cached`` (default) needs local weights (a DNA
model or an ``hf``-backed LLM exposing ``.model`` and ``.tokenizer``); ``api`` goes through
``llm.generate``/``llm.score`` and works with every backend; ``naive`` is one-prompt-at-a-time
``model.generate``, kept as the benchmark's peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paperlab.errors import ICLError
from paperlab.icl.scoring import LLMScorer, NaiveScorer, PrefixCacheScorer, Scorer

SCORERS = ("cached", "api", "naive")


@dataclass
class LoadedModel:
    """A resolved model: its display name, and the weights/tokenizer or the LLM handle."""

    name: str
    model: Any = None
    tokenizer: Any = None
    llm: Any = None

    def scorer(self, kind: str = "cached", context: int | None = None) -> Scorer:
        """Build the scorer ``kind`` (one of :data:`SCORERS`) for this model.

        Raises:
            ICLError: unknown kind, or a local-weights scorer for a remote model.
        """
        if kind not in SCORERS:
            raise ICLError(f"unknown scorer {kind!r}; choose from: {', '.join(SCORERS)}")
        if kind == "api":
            if self.llm is None:
                raise ICLError(f"--scorer api needs a paperlab.llm spec; for {self.name} use "
                               "--model hf:<model dir> or --scorer cached")
            ctx = context or _context_of(self.model)
            return LLMScorer(self.llm, context=ctx)
        if self.model is None:
            raise ICLError(
                f"--scorer {kind} needs local weights, which {self.name} does not expose; "
                "use --scorer api (and --context N to skip prompts that do not fit)"
            )
        cls = PrefixCacheScorer if kind == "cached" else NaiveScorer
        return cls(self.model, self.tokenizer, context=context)


def _context_of(model: Any) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def load_model(spec: str) -> LoadedModel:
    """Resolve a model spec (see the module docstring).

    Raises:
        ICLError: a ``dna`` spec whose model is not trained/present.
        paperlab.errors.LLMError: from ``paperlab.llm`` for other specs.
    """
    if spec == "dna" or spec.startswith("dna:"):
        from paperlab.icl.dnamodel import PRESETS, cached_model_dir
        from paperlab.icl.dnamodel import load_model as load_dna

        arg = spec.partition(":")[2] or "default"
        if arg in PRESETS:
            path = cached_model_dir(PRESETS[arg])
            if not (path / "config.json").is_file():
                flag = "" if arg == "default" else f" --preset {arg}"
                raise ICLError(f"the {arg} DNA model is not trained yet; run `paperlab icl train-dna{flag}`")
        else:
            path = Path(arg).expanduser()
        model, tok = load_dna(path)
        return LoadedModel(name=spec, model=model, tokenizer=tok)
    from paperlab.llm import load_llm

    llm = load_llm(spec)
    return LoadedModel(name=spec, model=getattr(llm, "model", None),
                       tokenizer=getattr(llm, "tokenizer", None), llm=llm)
