"""Model specs for the probes: the DNA model trained here, or any ``paperlab.llm`` spec.

- ``dna`` / ``dna:tiny``: the cached DNA model of the ``default`` / ``tiny`` preset
  (train it first with ``paperlab icl train-dna [--preset tiny]``);
- ``dna:<path>``: a DNA model directory;
- anything else goes to :func:`paperlab.llm.load_llm` (``smollm2``, ``hf:<dir>``,
  ``openai:<url>#<model>``).

Every model is reached through :class:`paperlab.llm.LLM` (a DNA model loaded here is wrapped by
the ``hf`` backend). The scorer is picked explicitly (``--scorer``): ``cached`` (default) needs
next-token distributions (a DNA model or an ``hf``-backed LLM); ``api`` goes through
``llm.generate``/``llm.score`` and works with every backend; ``naive`` is one-prompt-at-a-time
``llm.generate``, kept as the benchmark's peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paperlab.errors import ICLError
from paperlab.icl.scoring import LLMScorer, NaiveScorer, PrefixCacheScorer, Scorer, as_llm
from paperlab.llm import LLM

SCORERS = ("cached", "api", "naive")


@dataclass
class LoadedModel:
    """A resolved model: its display name and the LLM that reaches it.

    ``from_spec`` is False for DNA models loaded here (``dna`` specs), True for
    ``paperlab.llm`` specs.
    """

    name: str
    llm: LLM
    from_spec: bool = True

    def scorer(self, kind: str = "cached", context: int | None = None) -> Scorer:
        """Build the scorer ``kind`` (one of :data:`SCORERS`) for this model.

        Raises:
            ICLError: unknown kind, or a scorer the model's backend cannot serve.
        """
        if kind not in SCORERS:
            raise ICLError(f"unknown scorer {kind!r}; choose from: {', '.join(SCORERS)}")
        if kind == "api":
            if not self.from_spec:
                raise ICLError(f"--scorer api needs a paperlab.llm spec; for {self.name} use "
                               "--model hf:<model dir> or --scorer cached")
            return LLMScorer(self.llm, context=context or self.llm.context_length)
        if kind == "naive":
            return NaiveScorer(self.llm, context=context)
        if not self.llm.supports_next_tokens:
            raise ICLError(
                f"--scorer cached needs next-token distributions, which {self.name} does not give; "
                "use --scorer api (and --context N to skip prompts that do not fit)"
            )
        return PrefixCacheScorer(self.llm, context=context)


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
        return LoadedModel(name=spec, llm=as_llm(model, tok, spec), from_spec=False)
    from paperlab.llm import load_llm

    return LoadedModel(name=spec, llm=load_llm(spec))
