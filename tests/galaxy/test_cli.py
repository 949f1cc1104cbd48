"""The CLI as a user meets it: clear one-line errors (exit 2) and `status` from the journal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def cli(*args: str, token: str | None = "t", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("GALAXY_TOKEN", None)
    if token is not None:
        env["GALAXY_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "paperlab", "galaxy", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    r = cli("run", str(tmp_path / "missing.yaml"), "--journal", str(tmp_path / "j.sqlite"))
    assert r.returncode == 2 and "error: plan file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "cyc.yaml").write_text(
        "tasks:\n- {id: a, executor: {kind: echo}, after: [b]}\n- {id: b, executor: {kind: echo}, after: [a]}\n")
    r = cli("run", str(tmp_path / "cyc.yaml"), "--journal", str(tmp_path / "j.sqlite"), "--port", "0")
    assert r.returncode == 2 and "cycle" in r.stderr
    r = cli("serve", token=None)
    assert r.returncode == 2 and "GALAXY_TOKEN" in r.stderr
    r = cli("status", "nope", "--journal", str(tmp_path / "none.sqlite"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_status_replays_the_journal(tmp_path: Path) -> None:
    from paperlab.galaxy.orchestrator.events import Created, Dispatched, Result
    from paperlab.galaxy.orchestrator.journal import Journal
    from paperlab.galaxy.orchestrator.runstate import Run
    from paperlab.galaxy.plan.constellation import Constellation

    j = Journal(tmp_path / "j.sqlite")
    plan = Constellation.from_plan({"tasks": [{"id": "alpha", "executor": {"kind": "echo"}}]})
    j.create_run("r1", "demo")
    created = Created(plan=plan.plan_dict(), settings={}, ts=1.0)
    j.append("r1", created)
    run = Run.from_created("r1", created)
    for ev in [Dispatched(task="alpha", attempt="r1/alpha/1", device="d", ts=2.0),
               Result(task="alpha", attempt="r1/alpha/1", device="d", status="completed", result=42, ts=3.0)]:
        j.append("r1", ev)
        run.apply(ev)
    j.close()
    r = cli("status", "r1", "--journal", str(tmp_path / "j.sqlite"))
    assert r.returncode == 0, r.stderr
    assert "alpha" in r.stdout and "completed" in r.stdout and "42" in r.stdout
    r = cli("status", "r2", "--journal", str(tmp_path / "j.sqlite"))
    assert r.returncode == 2 and "known runs: ['r1']" in r.stderr


def test_ask_with_a_plan_file_runs_after_devices_join(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    plan = tmp_path / "p.yaml"
    plan.write_text(yaml.safe_dump({"tasks": [
        {"id": "hello", "capabilities": ["cpu"], "executor": {"kind": "echo", "args": {"value": "hi"}}}]}))
    env = {**os.environ, "PYTHONPATH": str(SRC), "GALAXY_TOKEN": galaxy.token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "paperlab", "galaxy", "ask", "say hi", "--plan", str(plan), "--yes",
         "--port", str(galaxy.port), "--journal", str(tmp_path / "j.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        galaxy.device("pc", ["cpu"])
        out, _ = proc.communicate(timeout=90 * galaxy.tscale)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "plan: " in out and "finished: completed" in out and "hello" in out


def test_token_and_control_commands_fail_in_one_line(tmp_path: Path) -> None:
    from paperlab.galaxy.protocol.auth import device_token

    r = cli("token", "--device", "laptop", token="sekret")
    assert r.returncode == 0 and r.stdout.strip() == device_token("sekret", "laptop")
    plan = tmp_path / "p.yaml"
    plan.write_text("tasks:\n- {id: a, executor: {kind: echo}}\n")
    from paperlab.testing import free_port

    r = cli("submit", str(plan), "--api", f"http://127.0.0.1:{free_port()}/api")
    assert r.returncode == 2 and "cannot reach the control API" in r.stderr and "Traceback" not in r.stderr


def test_max_send_mb_reaches_the_service_and_a_bad_one_is_one_line(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-send-mb (the bound on frames queued for a device that stops reading) reaches the
    service's options (in MiB) from both serve and run; below 1 it is one line, exit 2."""
    from typer.testing import CliRunner

    from paperlab.galaxy import cli as galaxy_cli
    from paperlab.galaxy.control import service

    seen: list[service.ServiceOptions] = []

    def fake_run_service(opts: service.ServiceOptions) -> str:  # the far side: no orchestrator
        seen.append(opts)
        return "completed"

    monkeypatch.setattr(service, "run_service", fake_run_service)
    plan = tmp_path / "p.yaml"
    plan.write_text("tasks:\n- {id: a, executor: {kind: echo}}\n")
    runner = CliRunner()
    r = runner.invoke(galaxy_cli.app, ["serve", "--token", "t", "--max-send-mb", "3"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(galaxy_cli.app, ["run", str(plan), "--token", "t"])
    assert r.exit_code == 0, r.output
    assert [o.max_send_mb for o in seen] == [3, 64]
    r = cli("run", str(plan), "--token", "t", "--max-send-mb", "0", token="t")
    assert r.returncode == 2 and "--max-send-mb 0: give at least 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
