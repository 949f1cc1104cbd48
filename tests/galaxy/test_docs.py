"""docs/galaxy.md as a user meets it: every example runs as written.

Fast: each YAML file in it (fenced, or written by a script's heredoc) loads with the loader it
is meant for; each protocol example decodes; the Python example runs; every plan's python
tasks are allowed by a device config the same example writes; every file it names exists; no
run-by-run history. Slow: the two bash scripts run end to end with real processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from paperlab.galaxy.device.executors import load_device_config
from paperlab.galaxy.plan.constellation import Constellation
from paperlab.galaxy.plan.edits import parse_batch
from paperlab.galaxy.planning.planner import DeviceSummary, check_placeable
from paperlab.galaxy.protocol.aip import decode
from paperlab.galaxy.protocol.registry import DeviceRegistry
from paperlab.testing import free_port

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "galaxy.md"
TEXT = DOC.read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", TEXT, re.S)


def heredocs(script: str) -> dict[str, str]:
    """The files a script writes with ``cat > NAME <<'EOF' ... EOF``."""
    return dict(re.findall(r"cat > (\S+) <<'EOF'\n(.*?)\nEOF\n", script, re.S))


def check_yaml(text: str, tmp: Path) -> str:
    """Load ``text`` with the loader its keys say it is for; returns which it was."""
    data = yaml.safe_load(text)
    if "tasks" in data:
        Constellation.from_plan(data)
        return "plan"
    if "device_id" in data:
        (tmp / "device.yaml").write_text(text)
        load_device_config(tmp / "device.yaml")
        return "device"
    if "edits" in data:
        parse_batch(data)
        return "edits"
    if "devices" in data:
        (tmp / "registry.yaml").write_text(text)
        assert len(DeviceRegistry(tmp / "registry.yaml")) == len(data["devices"])
        return "registry"
    raise AssertionError(f"a YAML example of no known kind: {text[:80]!r}")


def test_every_yaml_example_loads(tmp_path: Path) -> None:
    kinds = [check_yaml(b, tmp_path) for b in blocks("yaml")]
    for script in blocks("bash"):
        kinds += [check_yaml(text, tmp_path) for name, text in heredocs(script).items() if name.endswith(".yaml")]
    assert {"plan", "device", "edits", "registry"} <= set(kinds), kinds


def test_every_plan_runs_on_the_devices_its_example_configures(tmp_path: Path) -> None:
    """A plan's python tasks name functions; the devices the same script writes must allow
    them (a plan shown without its devices' allow-lists does not run as written)."""
    plans = 0
    for script in blocks("bash"):
        files = heredocs(script)
        devices: list[DeviceSummary] = []
        for name, text in files.items():
            if "device_id:" in text:
                (tmp_path / name).write_text(text)
                cfg = load_device_config(tmp_path / name)
                devices.append(DeviceSummary(cfg.device_id, cfg.capabilities, cfg.executors, sorted(cfg.python_allow)))
        # devices started by flags alone (--id ID --capabilities a,b) run every executor kind
        for dev_id, caps in re.findall(r"galaxy device --id (\S+) --capabilities (\S+)", script):
            devices.append(DeviceSummary(dev_id, caps.split(","), ["echo", "sleep", "shell", "llm"]))
        for text in (t for t in files.values() if "tasks:" in t):
            plan = Constellation.from_plan(yaml.safe_load(text))
            assert devices, f"plan {plan.name} is shown without the devices that run it"
            check_placeable(plan, devices)
            plans += 1
    for text in blocks("yaml"):  # a plan on its own must name no python function
        data = yaml.safe_load(text)
        for t in data.get("tasks", []) if isinstance(data, dict) else []:
            assert t["executor"]["kind"] != "python", f"plan task {t['id']} needs a device allow-list shown beside it"
    assert plans >= 2


def test_every_protocol_example_decodes() -> None:
    lines = [line for b in blocks("json") for line in b.splitlines() if line.strip()]
    types = {type(decode(line)).__name__ for line in lines}
    assert {"Register", "Heartbeat", "Task", "Cancel", "TaskResult", "DeviceInfo", "ErrorMsg", "Batch"} == types


def test_the_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    (code,) = blocks("python")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/galaxy.md", "exec"), {"__name__": "__main__"})  # noqa: S102 - our own doc
    out = capsys.readouterr().out
    assert "True applied (True, 'undo applied') (True, 'redo applied')" in out
    assert "completed {'args': {}, 'inputs': {'word': 'hello'}, 'device': 'laptop'}" in out


def test_every_file_it_names_exists_and_it_tells_no_history() -> None:
    named = set(re.findall(r"((?:bench|tests|docs|src)/[\w/.-]+\.(?:py|json|png|md|yaml))", TEXT))
    named |= {f"docs/{m}" for m in re.findall(r"\]\(([\w.-]+\.(?:png|md))\)", TEXT)}
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert not missing, missing
    assert any(n.endswith(".json") for n in named)  # the results table names its files
    for phrase in (r"[Ii]ssue \d", r"the lead", r"\bruns? [A-K]\d", r"this (round|session)", r"before the fix",
                   r"until this", r"[A-Z]+_(TABLE|LANE)\b"):
        assert not re.search(phrase, TEXT), phrase


def _run_script(script: str, tmp: Path, tscale: float) -> str:
    env = {**os.environ, "PORT": str(free_port()),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("GALAXY_TOKEN", None)
    env.pop("GALAXY_API", None)
    done = subprocess.run(["bash", "-c", script], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=180 * tscale)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path: Path, tscale: float) -> None:
    out = _run_script(blocks("bash")[0], tmp_path, tscale)
    assert "run photo1 finished: completed" in out and "run photo1: completed" in out
    registry: Any = yaml.safe_load((tmp_path / "galaxy-devices.yaml").read_text())
    assert [d["id"] for d in registry["devices"]] == ["phone", "server"]


@pytest.mark.slow
def test_the_live_edit_script_runs_as_written(tmp_path: Path, tscale: float) -> None:
    out = _run_script(blocks("bash")[1], tmp_path, tscale)
    assert out.count("accepted:") == 3 and "summarise" in out and ": completed" in out
