"""The house's one-way imports, read from the source: shared rooms import no system, and no
system imports another system's internals (the documented exceptions aside)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "paperlab"
SYSTEMS = ("soup", "rerank", "galaxy", "icl", "align", "instella", "paradiff")
# The one documented sideways arrow: the Instella recipe souping its seeds with paperlab.soup.
ALLOWED = {("instella", "soup")}


def imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for n in names:
            parts = n.split(".")
            if parts[0] == "paperlab" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


def test_the_training_loop_imports_no_system() -> None:
    for f in (SRC / "train").rglob("*.py"):
        assert not imported_rooms(f) & set(SYSTEMS), f


def test_systems_import_no_other_system() -> None:
    for system in SYSTEMS:
        for f in (SRC / system).rglob("*.py"):
            others = (imported_rooms(f) & set(SYSTEMS)) - {system}
            assert all((system, o) in ALLOWED for o in others), (f, others)


def _calls(path: Path, names: set[str]) -> list[int]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in names:
                found.append(node.lineno)
    return found


# Modules that are a command's edge: the CLIs, the demos, and the galaxy ask command's body.
EDGE = ("cli.py", "cli_merge.py", "demo.py", "demo_run.py")
EDGE_MODULES = {SRC / "galaxy" / "control" / "ask.py"}


def test_threads_are_sized_only_at_a_commands_edge() -> None:
    """One helper (paperlab.threads.set_threads), called by commands; library code never changes
    torch's thread count (the recipe and SoCE once did from inside their run functions)."""
    for f in SRC.rglob("*.py"):
        if f == SRC / "threads.py":
            continue
        assert not _calls(f, {"set_num_threads"}), f"{f} calls torch.set_num_threads: use paperlab.threads"
        if _calls(f, {"set_threads"}):
            assert f.name in EDGE or f in EDGE_MODULES, f"{f} sizes threads but is not a command's edge"
