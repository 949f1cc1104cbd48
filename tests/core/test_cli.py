"""The root CLI: systems listed, user errors as one line with exit code 2, the demo report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from paperlab.systems import SYSTEMS
from paperlab.testing import free_port


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paperlab", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_help_lists_every_system():
    out = run_cli("--help")
    assert out.returncode == 0
    for s in SYSTEMS:
        assert s.name in out.stdout


def test_user_error_is_one_line_exit_2_and_debug_shows_the_traceback():
    spec = f"openai:http://127.0.0.1:{free_port()}/v1#m"
    out = run_cli("llm", "generate", "--llm", spec, "--timeout", "1", "--retries", "1", "hi")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not get an answer")
    assert "Traceback" not in out.stderr
    dbg = run_cli("--debug", "llm", "generate", "--llm", "nope", "hi")
    assert dbg.returncode != 0 and "Traceback" in dbg.stderr and "BackendSpecError" in dbg.stderr


def test_unknown_spec_lists_the_valid_ones():
    out = run_cli("llm", "generate", "--llm", "gpt5", "hi")
    assert out.returncode == 2
    assert "valid forms: smollm2" in out.stderr and "openai:<base_url>#<model>" in out.stderr


def test_demo_only_unknown_system_is_a_user_error():
    out = run_cli("demo", "--only", "bogus")
    assert out.returncode == 2 and "choose one of: soup" in out.stderr


def test_demo_only_unknown_name_fails_before_any_heavy_import(capsys, monkeypatch):
    """In process: the name is checked before transformers or torch are imported (6.8 s)."""
    import sys

    from paperlab.cli import main

    for mod in [m for m in sys.modules if m.split(".")[0] in ("transformers", "torch")]:
        monkeypatch.delitem(sys.modules, mod)
    try:
        main(["demo", "--only", "bogus"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "choose one of" in err[0]
    assert not [m for m in sys.modules if m.split(".")[0] in ("transformers", "torch")]


def test_importing_paperlab_and_its_cli_stays_light():
    code = ("import sys, paperlab, paperlab.cli, paperlab.llm; "
            "heavy = [m for m in ('torch', 'transformers', 'httpx', 'websockets') if m in sys.modules]; "
            "print(heavy); assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_importing_the_cli_imports_no_system_dependency():
    # `paperlab --help` must start at once: the system sub-apps load only when one runs.
    code = ("import sys, paperlab.cli; "
            "heavy = [m for m in ('numpy', 'pydantic', 'torch', 'yaml') if m in sys.modules]; "
            "print(heavy); assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_lazily_mounted_system_runs_and_maps_its_errors():
    out = run_cli("soup", "merge", "/nonexistent-config.yaml", "/tmp/never-written")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")
    helped = run_cli("soup", "--help")
    assert helped.returncode == 0 and "merge" in helped.stdout


def test_a_piped_table_arrives_whole(capsys):
    """Piped (stdout not a terminal, as under pytest), rich drew for 80 columns and cut cells
    ("smol…", "gradie…"); commands print tables through paperlab.console now."""
    from paperlab.cli import main

    try:
        main(["instella", "recipe", "--preset", "gpu", "--dry-run", "--nproc", "8", "--parallel", "fsdp"])
    except SystemExit as exc:
        assert not exc.code
    out = capsys.readouterr().out
    assert "…" not in out
    for word in ("gradients", "optimizer", "activations", "pretrain", "308,610,048 parameters"):
        assert word in out


def test_out_console_keeps_wide_cells_when_piped(capsys):
    from rich.table import Table

    from paperlab.console import out_console

    t = Table()
    t.add_column("model")
    t.add_column("spec")
    t.add_row("smollm2", "openai:http://127.0.0.1:8000/v1#" + "x" * 120)
    out_console().print(t)
    out = capsys.readouterr().out
    assert "smollm2" in out and "x" * 120 in out and "…" not in out
