"""Device-side policy: the device's own config decides what runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from paperlab.errors import ConfigError
from paperlab.galaxy.device.executors import DeviceConfig, load_device_config, run_executor
from paperlab.galaxy.errors import ExecutorError


def run(kind: str, args: dict, cfg: DeviceConfig, inputs: dict | None = None):  # type: ignore[no-untyped-def]
    return asyncio.run(run_executor(kind, args, inputs or {}, cfg))


def test_policy_refusals() -> None:
    cfg = DeviceConfig(device_id="d", shell_allow=["echo"], executors=["echo", "shell", "python", "llm"],
                       python_allow={"count": "paperlab.galaxy.device.tools:count_words"})
    assert run("shell", {"argv": ["echo", "a"]}, cfg)["stdout"] == "a\n"
    for kind, args, message in [
        ("shell", {"argv": ["rm", "-rf", "/"]}, "allow-list"),
        ("shell", {"argv": "echo a; rm -rf /"}, "argv"),
        ("python", {"function": "os.system"}, "not allowed"),
        ("llm", {"prompt": "hi"}, "no llm_spec"),
        ("sleep", {"seconds": 0}, "disabled"),
        ("nope", {}, "disabled"),
    ]:
        with pytest.raises(ExecutorError, match=message):
            run(kind, args, cfg)
    out = run("python", {"function": "count", "kwargs": {"seconds": 0}}, cfg, {"docs": ["a b", "c"]})
    assert out == {"words": 3, "docs": 2}


def test_config_is_validated_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "d.yaml"
    bad.write_text("device_id: d\npython_allow: {x: 'no.such.module:f'}\n")
    with pytest.raises(ExecutorError, match="cannot be imported"):
        load_device_config(bad)
    with pytest.raises(ConfigError, match="device_id"):
        load_device_config(None, device_id="bad id!")
