"""The CLI as a user meets it: clear one-line errors (exit 2, nothing changed), the device
registry commands, and `status` from the journal. Error paths run in process (paperlab.cli.main,
the same entry point as the `paperlab` command); one test starts real processes (slow lane)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``paperlab galaxy ARGS`` in this process: (exit code, stdout, stderr)."""
    from paperlab.cli import main

    code = 0
    try:
        main(["galaxy", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GALAXY_TOKEN", "sekret")
    monkeypatch.delenv("GALAXY_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)  # the default registry and journal paths are relative


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(capsys, "run", str(tmp_path / "missing.yaml"), "--journal", str(tmp_path / "j.sqlite"))
    one_line_error(code, err, "plan file")
    (tmp_path / "cyc.yaml").write_text(
        "tasks:\n- {id: a, executor: {kind: echo}, after: [b]}\n- {id: b, executor: {kind: echo}, after: [a]}\n")
    code, _, err = run_cli(capsys, "run", str(tmp_path / "cyc.yaml"), "--journal", str(tmp_path / "j.sqlite"))
    one_line_error(code, err, "cycle")
    assert not (tmp_path / "j.sqlite").exists()  # checked before the journal was opened
    code, _, err = run_cli(capsys, "status", "nope", "--journal", str(tmp_path / "none.sqlite"))
    one_line_error(code, err, "does not exist")
    (tmp_path / "ok.yaml").write_text("tasks:\n- {id: a, executor: {kind: echo}}\n")
    code, _, err = run_cli(capsys, "run", "ok.yaml", "--allow-origin", "dashboard.example.org")
    one_line_error(code, err, "--allow-origin", "scheme://host[:port]")
    monkeypatch.delenv("GALAXY_TOKEN")
    code, _, err = run_cli(capsys, "serve")
    one_line_error(code, err, "GALAXY_TOKEN")


def test_registry_bad_input_is_one_line_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "galaxy-devices.yaml"
    (tmp_path / "p.yaml").write_text("tasks:\n- {id: a, executor: {kind: echo}}\n")
    key = "'" + "0" * 32 + "'"
    reg.write_text(f"devices:\n- {{id: a, capabilites: [cpu], key: {key}}}\n")
    for args in (["devices", "list"], ["devices", "add", "b"], ["run", "p.yaml"]):
        code, _, err = run_cli(capsys, *args)
        one_line_error(code, err, "capabilites", "galaxy-devices.yaml")
    twice = "devices:\n" + "".join(f"- {{id: a, key: '{c * 32}'}}\n" for c in "01")
    reg.write_text(twice)
    code, _, err = run_cli(capsys, "devices", "revoke", "a")
    one_line_error(code, err, "'a' appears more than once")
    assert reg.read_text() == twice
    reg.write_text(f"devices:\n- {{id: a, key: {key}}}\n")
    before = reg.read_text()
    code, _, err = run_cli(capsys, "devices", "revoke", "ghost")
    one_line_error(code, err, "no device 'ghost'", "registered: ['a']")
    code, _, err = run_cli(capsys, "devices", "add", "a")
    one_line_error(code, err, "already registered")
    code, _, err = run_cli(capsys, "devices", "add", "b", "--executors", "echo,teleport")
    one_line_error(code, err, "teleport")
    assert reg.read_text() == before


def test_devices_add_list_revoke_and_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from paperlab.galaxy.protocol.auth import device_token
    from paperlab.galaxy.protocol.registry import DeviceRegistry

    code, out, err = run_cli(capsys, "devices", "add", "laptop", "--capabilities", "cpu,office",
                             "--executors", "echo,shell", "--max-concurrency", "4")
    assert code == 0, err
    reg = DeviceRegistry("galaxy-devices.yaml").get("laptop")
    assert reg is not None and reg.capabilities == ["cpu", "office"] and reg.executors == ["echo", "shell"]
    assert out.strip() == device_token("sekret", "laptop", reg.key)
    code, again, _ = run_cli(capsys, "token", "--device", "laptop")
    assert code == 0 and again == out
    code, out, _ = run_cli(capsys, "devices", "list")
    assert code == 0 and "laptop" in out and "cpu,office" in out and reg.key not in out
    code, out, _ = run_cli(capsys, "devices", "revoke", "laptop")
    assert code == 0 and "revoked laptop" in out
    code, _, err = run_cli(capsys, "token", "--device", "laptop")
    one_line_error(code, err, "not in the registry", "devices add laptop")


def test_status_replays_the_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    code, out, err = run_cli(capsys, "status", "r1", "--journal", str(tmp_path / "j.sqlite"))
    assert code == 0, err
    assert "alpha" in out and "completed" in out and "42" in out
    code, _, err = run_cli(capsys, "status", "r2", "--journal", str(tmp_path / "j.sqlite"))
    one_line_error(code, err, "known runs: ['r1']")


def test_control_commands_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from paperlab.testing import free_port

    (tmp_path / "p.yaml").write_text("tasks:\n- {id: a, executor: {kind: echo}}\n")
    api = f"http://127.0.0.1:{free_port()}/api"
    for args in (["submit", "p.yaml"], ["devices", "online"], ["undo", "r1"]):
        code, _, err = run_cli(capsys, *args, "--api", api)
        one_line_error(code, err, "cannot reach the control API")


def test_service_options_come_from_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-send-mb, --registry, --allow-origin, --max-viewers and --keep-mb reach the
    service's options from both serve and run; a bad value is one line, exit 2."""
    from paperlab.galaxy.control import service

    seen: list[service.ServiceOptions] = []

    def fake_run_service(opts: service.ServiceOptions) -> str:  # the far side: no orchestrator
        seen.append(opts)
        return "completed"

    monkeypatch.setattr(service, "run_service", fake_run_service)
    (tmp_path / "p.yaml").write_text("tasks:\n- {id: a, executor: {kind: echo}}\n")
    code, _, err = run_cli(capsys, "serve", "--max-send-mb", "3", "--registry", "r.yaml", "--allow-origin",
                           "https://dash.example.org", "--max-viewers", "2", "--keep-mb", "100")
    assert code == 0, err
    code, _, err = run_cli(capsys, "run", "p.yaml")
    assert code == 0, err
    assert [o.max_send_mb for o in seen] == [3, 64]
    assert seen[0].registry == Path("r.yaml") and seen[0].allow_origins == ["https://dash.example.org"]
    assert seen[0].max_viewers == 2 and seen[0].keep_mb == 100 and seen[1].registry == Path("galaxy-devices.yaml")
    code, _, err = run_cli(capsys, "run", "p.yaml", "--max-send-mb", "0")
    one_line_error(code, err, "--max-send-mb 0: give at least 1")
    code, _, err = run_cli(capsys, "serve", "--keep-mb", "0")
    one_line_error(code, err, "--keep-mb 0")


@pytest.mark.slow
def test_ask_with_a_plan_file_runs_after_devices_join(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    plan = tmp_path / "p.yaml"
    plan.write_text(yaml.safe_dump({"tasks": [
        {"id": "hello", "capabilities": ["cpu"], "executor": {"kind": "echo", "args": {"value": "hi"}}}]}))
    env = {**os.environ, "PYTHONPATH": str(SRC), "GALAXY_TOKEN": galaxy.token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "paperlab", "galaxy", "ask", "say hi", "--plan", str(plan), "--yes",
         "--port", str(galaxy.port), "--journal", str(tmp_path / "j.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        galaxy.device("pc", ["cpu"])
        out, _ = proc.communicate(timeout=90 * galaxy.tscale)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "plan: " in out and "finished: completed" in out and "hello" in out
