"""Every name a paperlab package exports is what it says, whatever was imported before.

A submodule named like a lazily exported function (align/cknna.py beside the cknna function)
used to win once something had imported it: `from paperlab.align import cknna` then gave the
module, depending on import order. Importing every submodule first and then reading every
export shows any such shadowing."""

from __future__ import annotations

import importlib
import pkgutil
import types

PACKAGES = ["align", "soup", "rerank", "galaxy", "icl", "instella", "paradiff", "llm", "train"]


def test_exports_are_not_shadowed_by_submodules() -> None:
    bad = []
    for package in PACKAGES:
        pkg = importlib.import_module(f"paperlab.{package}")
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if not m.name.endswith((".cli", ".demo", ".__main__")):
                importlib.import_module(m.name)
        bad += [f"{pkg.__name__}.{n}" for n in getattr(pkg, "__all__", [])
                if isinstance(getattr(pkg, n), types.ModuleType)]
    assert bad == []
