"""Device-side executors and the device's own policy of what it will run.

The orchestrator sends an executor kind and arguments; the device looks the kind up in
:data:`EXECUTORS` and checks the arguments against its :class:`DeviceConfig`. The config is the
only authority: ``shell`` runs only programs on ``shell_allow``, ``python`` calls only the
callables named in ``python_allow`` (name -> ``module:function``), ``llm`` only when the config
gives ``llm_spec``. An orchestrator (or anyone holding the token) cannot widen that.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import inspect
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paperlab.errors import config_error
from paperlab.galaxy.errors import DeviceConfigError, ExecutorError
from paperlab.galaxy.plan.constellation import EXECUTOR_KINDS, ID_PATTERN

if TYPE_CHECKING:
    from paperlab.llm import LLM

__all__ = ["ATTEMPT_ID", "EXECUTORS", "DeviceConfig", "get_executor", "load_device_config", "run_executor"]

log = logging.getLogger(__name__)

# The attempt being run, for executors (and python callables) that need it: a ContextVar, so
# concurrent tasks on one device each see their own.
ATTEMPT_ID: contextvars.ContextVar[str] = contextvars.ContextVar("galaxy_attempt_id", default="")

Executor = Callable[[dict[str, Any], dict[str, Any], "DeviceConfig"], Awaitable[Any]]


class DeviceConfig(BaseModel):
    """What a device is and what it allows. Loaded from YAML and/or CLI flags."""

    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=ID_PATTERN)
    capabilities: list[str] = Field(default_factory=list)
    max_concurrency: int = Field(default=2, ge=1, le=1024)
    executors: list[str] = Field(default_factory=lambda: list(EXECUTOR_KINDS))
    shell_allow: list[str] = Field(default_factory=list)
    python_allow: dict[str, str] = Field(default_factory=dict)
    llm_spec: str | None = None
    heartbeat_interval: float = Field(default=1.0, gt=0)
    # Cap on the output a shell command may return, so one task cannot flood the protocol.
    max_output_bytes: int = 256_000

    def resolve_python(self, name: str) -> Callable[..., Any]:
        """The callable this device allows under ``name``; ExecutorError if none."""
        target = self.python_allow.get(name)
        if target is None:
            raise ExecutorError(f"python callable {name!r} is not allowed on device "
                                f"{self.device_id}; allowed: {sorted(self.python_allow)}")
        module, _, attr = target.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ExecutorError(f"python_allow[{name!r}] = {target!r} cannot be imported: {exc}") from None
        if not callable(fn):
            raise ExecutorError(f"python_allow[{name!r}] = {target!r} is not callable")
        return fn


def load_device_config(path: str | Path | None, **overrides: Any) -> DeviceConfig:
    """Read a YAML device config (optional) and apply CLI overrides that are not None."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise DeviceConfigError(f"device config {p} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise DeviceConfigError(f"device config {p} must be a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = DeviceConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, "device config", DeviceConfigError) from None
    for name in cfg.python_allow:  # fail at start-up, not at the first task
        cfg.resolve_python(name)
    return cfg


async def _echo(args: dict[str, Any], inputs: dict[str, Any], cfg: DeviceConfig) -> Any:
    """Return ``args['value']`` if given, else the arguments and inputs."""
    if "value" in args:
        return args["value"]
    return {"args": args, "inputs": inputs, "device": cfg.device_id}


async def _sleep(args: dict[str, Any], inputs: dict[str, Any], cfg: DeviceConfig) -> Any:
    """Sleep ``args['seconds']``; fail if ``args['fail']``; return ``args.get('value')``."""
    await asyncio.sleep(float(args.get("seconds", 0.0)))
    if args.get("fail"):
        raise ExecutorError(str(args.get("fail")))
    return args.get("value", {"slept": float(args.get("seconds", 0.0)), "device": cfg.device_id})


async def _shell(args: dict[str, Any], inputs: dict[str, Any], cfg: DeviceConfig) -> Any:
    """Run ``args['argv']`` (a list, no shell) if its program is on the device's allow-list."""
    argv = args.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ExecutorError("shell needs args.argv: a non-empty list of strings (no shell string)")
    program = argv[0]
    if program not in cfg.shell_allow:
        raise ExecutorError(f"command {program!r} is not on device {cfg.device_id}'s allow-list "
                            f"{sorted(cfg.shell_allow)}; refused")
    exe = shutil.which(program)
    if exe is None:
        raise ExecutorError(f"allowed command {program!r} is not installed on {cfg.device_id}")
    env = dict(os.environ)
    env["GALAXY_ATTEMPT_ID"] = ATTEMPT_ID.get()
    for k, v in inputs.items():
        env[f"GALAXY_INPUT_{k.upper()}"] = v if isinstance(v, str) else json.dumps(v)
    proc = await asyncio.create_subprocess_exec(
        exe, *argv[1:], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()  # a cancelled or timed-out task must not leave its process running
        await proc.wait()
        raise
    stdout = out[: cfg.max_output_bytes].decode("utf-8", "replace")
    if proc.returncode != 0:
        raise ExecutorError(f"{program} exited {proc.returncode}: "
                            f"{err[:2000].decode('utf-8', 'replace').strip()}")
    return {"stdout": stdout, "returncode": proc.returncode}


async def _python(args: dict[str, Any], inputs: dict[str, Any], cfg: DeviceConfig) -> Any:
    """Call the allowed callable ``args['function']`` with ``args['kwargs']`` and the inputs."""
    name = args.get("function")
    if not isinstance(name, str):
        raise ExecutorError("python needs args.function: the name of an allowed callable")
    fn = cfg.resolve_python(name)
    kwargs = {**dict(args.get("kwargs") or {}), **inputs}
    if "attempt_id" in inspect.signature(fn).parameters:
        kwargs["attempt_id"] = ATTEMPT_ID.get()
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    return await asyncio.to_thread(fn, **kwargs)  # to_thread carries ATTEMPT_ID into the thread


_LLMS: dict[str, LLM] = {}


async def _llm(args: dict[str, Any], inputs: dict[str, Any], cfg: DeviceConfig) -> Any:
    """Generate from ``args['prompt']`` (``{name}`` filled from inputs) with the device's LLM."""
    if not cfg.llm_spec:
        raise ExecutorError(f"device {cfg.device_id} has no llm_spec; it does not run llm tasks")
    from paperlab.llm import load_llm  # heavy: only on devices that run llm tasks

    if cfg.llm_spec not in _LLMS:
        _LLMS[cfg.llm_spec] = await asyncio.to_thread(load_llm, cfg.llm_spec)
    prompt = str(args.get("prompt", ""))
    # A prompt with literal braces that do not name inputs is used as written.
    with contextlib.suppress(KeyError, IndexError, ValueError):
        prompt = prompt.format(**{k: v if isinstance(v, str) else json.dumps(v) for k, v in inputs.items()})
    gen = await _LLMS[cfg.llm_spec].agenerate(
        [{"role": "user", "content": prompt}], max_tokens=int(args.get("max_tokens", 64)),
        temperature=0.0)
    return {"text": gen.text, "completion_tokens": gen.completion_tokens, "attempt_id": ATTEMPT_ID.get()}


EXECUTORS: dict[str, Executor] = {
    "echo": _echo,
    "sleep": _sleep,
    "shell": _shell,
    "python": _python,
    "llm": _llm,
}
assert tuple(EXECUTORS) == EXECUTOR_KINDS, "the plan room's EXECUTOR_KINDS names every executor"


def get_executor(kind: str) -> Executor:
    """The executor registered under ``kind``; ExecutorError listing the valid kinds."""
    try:
        return EXECUTORS[kind]
    except KeyError:
        raise ExecutorError(f"unknown executor {kind!r}; known: {', '.join(sorted(EXECUTORS))}") from None


async def run_executor(kind: str, args: dict[str, Any], inputs: dict[str, Any], cfg: DeviceConfig,
                       attempt_id: str = "") -> Any:
    """Run one task under the device's policy. Raises ExecutorError when refused or failed.

    ``attempt_id`` reaches the task (``GALAXY_ATTEMPT_ID`` for shell and python tasks, the
    ``attempt_id`` field of an llm result) so a task with side effects can make them idempotent.
    """
    if kind not in cfg.executors:
        raise ExecutorError(f"executor {kind!r} is disabled on device {cfg.device_id}; "
                            f"enabled: {cfg.executors}")
    token = ATTEMPT_ID.set(attempt_id)
    try:
        return await get_executor(kind)(args, inputs, cfg)
    finally:
        ATTEMPT_ID.reset(token)
