"""Every name a paperlab package exports is what it says, whatever was imported before.

A submodule named like a lazily exported function (align/cknna.py beside the cknna function)
used to win once something had imported it: `from paperlab.align import cknna` then gave the
module, depending on import order."""

from __future__ import annotations

import subprocess
import sys

import pytest

PACKAGES = ["align", "soup", "rerank", "galaxy", "icl", "instella", "paradiff", "llm", "train"]


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_are_not_shadowed_by_submodules(package: str) -> None:
    code = (
        "import importlib, pkgutil, types\n"
        f"P = importlib.import_module('paperlab.{package}')\n"
        "for m in pkgutil.walk_packages(P.__path__, P.__name__ + '.'):\n"
        "    if not m.name.endswith(('.cli', '.demo', '.__main__')):\n"
        "        importlib.import_module(m.name)\n"
        "bad = [n for n in getattr(P, '__all__', []) if isinstance(getattr(P, n), types.ModuleType)]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"paperlab.{package} exports modules: {out.stdout}"
