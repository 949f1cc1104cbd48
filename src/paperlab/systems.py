"""The seven systems, as data: their CLI names, titles, and where their code lives.

A system is "available" when its package has both a ``cli`` module (a typer sub-app named
``app``) and a ``demo`` module (a ``run(ctx) -> Section`` function). Nothing here imports a
system's heavy dependencies: availability is decided by looking for the modules, not loading them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class System:
    name: str  # CLI sub-command and package name under paperlab
    title: str
    summary: str

    @property
    def package(self) -> str:
        return f"paperlab.{self.name}"

    def has_module(self, module: str) -> bool:
        # A file check, not importlib.util.find_spec: find_spec on a submodule imports the
        # parent package, and a system's __init__ may pull numpy or pydantic.
        return (_ROOT / self.name / f"{module}.py").is_file()

    @property
    def available(self) -> bool:
        return self.has_module("cli") and self.has_module("demo")


SYSTEMS: tuple[System, ...] = (
    System("soup", "SoCE model souping", "pick category experts, search weights, merge checkpoints"),
    System("rerank", "GroupRank reranking", "groupwise LLM reranking for retrieval"),
    System("paradiff", "MMaDA-Parallel", "parallel text+image masked-diffusion decoding"),
    System("galaxy", "Galaxy (UFO^3)", "a DAG of agent tasks run across devices"),
    System("icl", "Genomic ICL probes", "do DNA next-token predictors learn in context?"),
    System("instella", "Instella", "a fully open language model: architecture and recipe"),
    System("align", "Dynamic Reflections", "video-text representation alignment and its scaling"),
)


def get_system(name: str) -> System:
    """Return the system called ``name``.

    Raises:
        ConfigError: no such system (the message lists the valid names).
    """
    from paperlab.errors import ConfigError

    for s in SYSTEMS:
        if s.name == name:
            return s
    valid = ", ".join(s.name for s in SYSTEMS)
    raise ConfigError(f"unknown system {name!r}; choose one of: {valid}")
