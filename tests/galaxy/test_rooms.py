"""Galaxy's rooms import one way: each only the rooms below it (TYPE_CHECKING imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "paperlab" / "galaxy"
BASE = {"errors", "defaults", "ratelog"}
# room -> the rooms it may import (besides itself and the base modules)
ALLOWED = {
    "plan": set(),
    "protocol": {"plan"},
    "device": {"plan", "protocol"},
    "orchestrator": {"plan", "protocol"},
    "planning": {"plan", "protocol", "orchestrator"},
    "dashboard": {"plan", "protocol", "orchestrator"},
    "control": {"plan", "protocol", "device", "orchestrator", "planning", "dashboard"},
}


def _imported_rooms(path: Path) -> set[str]:
    rooms: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["paperlab", "galaxy"] and len(parts) > 2:
                rooms.add(parts[2])
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_the_rooms_below_it(room: str) -> None:
    files = sorted((PKG / room).glob("*.py"))
    assert files, f"room {room} has no modules"
    for path in files:
        bad = _imported_rooms(path) - ALLOWED[room] - BASE - {room}
        assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}; {room} may import {sorted(ALLOWED[room])}"


def test_every_module_lives_in_a_room() -> None:
    loose = {p.stem for p in PKG.glob("*.py")} - BASE - {"__init__", "__main__", "cli", "demo", "timeline"}
    assert not loose, f"modules outside a room: {sorted(loose)}"
    assert {p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(ALLOWED)


def _module_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("paperlab.galaxy"):
            for a in node.names:  # ``from paperlab.galaxy.plan import edits`` names a module too
                sub = f"{node.module}.{a.name}"
                out.add(sub if (PKG / Path(*sub.split(".")[2:])).with_suffix(".py").exists() else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("paperlab.galaxy"))
    return out


def test_no_module_imports_itself_through_others() -> None:
    mods = {".".join(("paperlab", "galaxy", *p.relative_to(PKG).with_suffix("").parts)): p
            for p in PKG.rglob("*.py") if p.stem != "__init__"}
    graph = {m: _module_imports(p) & set(mods) for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, f"import circle: {' -> '.join(path[path.index(n):] + [n]) if n in path else n}"
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
