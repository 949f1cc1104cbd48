"""AIP, the Agent Interaction Protocol: typed messages and a pure per-connection state machine.

Messages are pydantic models serialised as one JSON object per WebSocket text frame, with a
``type`` tag and the protocol version ``v``. Devices dial in to the orchestrator:

    device -> orchestrator: REGISTER (first), HEARTBEAT, TASK_RESULT, DEVICE_INFO, ERROR
    orchestrator -> device: TASK, CANCEL, HEARTBEAT (echo), DEVICE_INFO, ERROR
    both: BATCH, a list of up to :data:`MAX_BATCH` of the messages above in one frame

A BATCH is how a busy peer sends what piled up while its last frame was being written (all
the TASKs of one scheduling step, all the results that finished in one loop turn): one frame,
one system call and one parse instead of one per message. Each message inside is checked on
its own, exactly as if it had come in its own frame (in order; a bad one is answered with
ERROR and the others still count); a BATCH inside a BATCH is refused.

:class:`Session` holds no socket. Bytes go in through :meth:`Session.receive`, which returns
the accepted messages; replies (ERROR for anything malformed, oversized, of the wrong
direction or out of order) are queued and taken with :meth:`Session.data_to_send`. It never
raises on bad input, so a hostile peer cannot crash the orchestrator; after too many errors it
asks to be closed. The asyncio layers (:mod:`paperlab.galaxy.control.server`, :mod:`paperlab.galaxy.device.agent`) only move
frames between a socket and a Session.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from paperlab.galaxy.errors import ProtocolError
from paperlab.galaxy.plan.constellation import ID_PATTERN, ExecutorSpec, Seconds

__all__ = [
    "PROTOCOL_VERSION",
    "BATCH_BYTES",
    "MAX_BATCH",
    "Batch",
    "Cancel",
    "DeviceInfo",
    "ErrorMsg",
    "Heartbeat",
    "Message",
    "Register",
    "Session",
    "Task",
    "TaskResult",
    "batch_frames",
    "encode_batch",
    "decode",
    "encode",
]

# v2 added BATCH; a v1 peer is answered with ERROR ``version`` naming both versions.
PROTOCOL_VERSION: Final = 2
DEFAULT_MAX_BYTES = 1 << 20
MAX_BATCH: Final = 256  # messages per BATCH frame
# Bytes per BATCH frame a writer makes (a single larger message still goes alone): far under
# any sane frame limit (DEFAULT_MAX_BYTES is 16x this).
BATCH_BYTES: Final = 64 * 1024


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[2] = PROTOCOL_VERSION


class TaskResult(_Msg):
    type: Literal["TASK_RESULT"] = "TASK_RESULT"
    task_id: str
    attempt_id: str
    # ``refused``: the device had no free slot; a scheduling event, never a task failure.
    status: Literal["completed", "failed", "cancelled", "refused"]
    result: Any = None
    error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None


class Register(_Msg):
    type: Literal["REGISTER"] = "REGISTER"
    device_id: str = Field(pattern=ID_PATTERN)
    capabilities: list[str] = Field(default_factory=list, max_length=256)
    max_concurrency: int = Field(default=1, ge=1, le=1024)
    # Attempts the device is still running (after a reconnect), so the orchestrator can tell
    # a live attempt from one that was lost with the old connection.
    running: list[str] = Field(default_factory=list, max_length=4096)
    # Results the device finished (or sent) while the orchestrator may not have heard them;
    # duplicates are expected and dropped by the orchestrator.
    results: list[TaskResult] = Field(default_factory=list, max_length=1024)
    info: dict[str, Any] = Field(default_factory=dict)


class Heartbeat(_Msg):
    type: Literal["HEARTBEAT"] = "HEARTBEAT"
    running: list[str] = Field(default_factory=list, max_length=4096)
    sent_at: float = 0.0


class Task(_Msg):
    type: Literal["TASK"] = "TASK"
    task_id: str
    attempt_id: str
    executor: ExecutorSpec
    inputs: dict[str, Any] = Field(default_factory=dict)
    timeout: Seconds  # the plan's own rule, checked again only where frames come in


class Cancel(_Msg):
    type: Literal["CANCEL"] = "CANCEL"
    attempt_id: str
    reason: str = ""


class DeviceInfo(_Msg):
    type: Literal["DEVICE_INFO"] = "DEVICE_INFO"
    info: dict[str, Any] = Field(default_factory=dict)


class ErrorMsg(_Msg):
    type: Literal["ERROR"] = "ERROR"
    code: str
    message: str


Message = Annotated[
    Register | Heartbeat | Task | Cancel | TaskResult | DeviceInfo | ErrorMsg,
    Field(discriminator="type"),
]


class Batch(_Msg):
    """Several messages in one frame (never a BATCH inside a BATCH)."""

    type: Literal["BATCH"] = "BATCH"
    messages: list[Message] = Field(min_length=1, max_length=MAX_BATCH)


_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)
_TYPES = ("REGISTER", "HEARTBEAT", "TASK", "CANCEL", "TASK_RESULT", "DEVICE_INFO", "ERROR", "BATCH")

FROM_DEVICE = (Register, Heartbeat, TaskResult, DeviceInfo, ErrorMsg)
FROM_ORCHESTRATOR = (Task, Cancel, Heartbeat, DeviceInfo, ErrorMsg)


def encode(msg: BaseModel) -> str:
    """One message as a JSON text frame."""
    return msg.model_dump_json()


def encode_batch(frames: list[str]) -> str:
    """Encoded messages (each from :func:`encode`) as one BATCH frame, without re-encoding."""
    return f'{{"v":{PROTOCOL_VERSION},"type":"BATCH","messages":[{",".join(frames)}]}}'


def batch_frames(frames: list[str], budget: int = BATCH_BYTES) -> list[str]:
    """The frames to write for ``frames`` (encoded messages, in order): runs of them joined
    into BATCH frames of at most :data:`MAX_BATCH` messages and ``budget`` bytes; a message
    alone in its run goes as it is."""
    out: list[str] = []
    run: list[str] = []
    size = 0
    for f in frames:
        if run and (len(run) >= MAX_BATCH or size + len(f) + 1 > budget):
            out.append(run[0] if len(run) == 1 else encode_batch(run))
            run, size = [], 0
        run.append(f)
        size += len(f) + 1
    if run:
        out.append(run[0] if len(run) == 1 else encode_batch(run))
    return out


def _parse(data: str | bytes, max_bytes: int) -> dict[str, Any]:
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        raise ProtocolError("oversized", f"message of {size} bytes exceeds the {max_bytes}-byte limit")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError("malformed", f"not JSON: {str(exc)[:100]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "a message must be a JSON object")
    return obj


def _batch_items(obj: dict[str, Any]) -> list[Any]:
    """The raw messages of a BATCH object (frame-level checks only)."""
    _check_version(obj)
    extra = sorted(set(obj) - {"v", "type", "messages"})
    if extra:
        raise ProtocolError("invalid", f"BATCH field {extra[0]!r}: Extra inputs are not permitted")
    items = obj.get("messages")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise ProtocolError("invalid", f"BATCH field 'messages': a list of 1 to {MAX_BATCH} messages")
    return items


def decode(data: str | bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse one frame into a message (a :class:`Batch` for a BATCH frame).

    Raises:
        ProtocolError: code ``oversized``, ``malformed`` (not UTF-8 JSON object),
            ``version`` (unsupported protocol version), ``unknown_type`` or ``invalid``.
    """
    obj = _parse(data, max_bytes)
    if obj.get("type") == "BATCH":
        return Batch(messages=[_message(m) for m in _batch_items(obj)])
    return _message(obj)


def _check_version(obj: dict[str, Any]) -> None:
    if obj.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        raise ProtocolError("version", f"protocol version {obj.get('v')!r} unsupported; "
                                       f"this side speaks v{PROTOCOL_VERSION}")


def _message(obj: Any) -> Any:
    """One message object (not a BATCH) validated into its model."""
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "a message must be a JSON object")
    if obj.get("type") == "BATCH":  # only reachable inside a BATCH
        raise ProtocolError("invalid", "a BATCH cannot hold another BATCH")
    _check_version(obj)
    if obj.get("type") not in _TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {str(obj.get('type'))[:40]!r}; "
                                            f"known: {', '.join(_TYPES)}")
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"][1:])
        raise ProtocolError("invalid", f"{obj['type']} field {loc!r}: {err['msg']}") from None
    except RecursionError:
        raise ProtocolError("malformed", "message nested too deeply") from None


class Session:
    """The protocol state of one connection, seen from one side (``orchestrator`` or ``device``).

    On the orchestrator side the first accepted message must be REGISTER; anything else
    before it is answered with ERROR ``out_of_order``. A second REGISTER is out of order too.
    """

    def __init__(self, side: Literal["orchestrator", "device"],
                 max_bytes: int = DEFAULT_MAX_BYTES, max_errors: int = 50) -> None:
        self.side = side
        self.max_bytes = max_bytes
        self.max_errors = max_errors
        self.registered = side == "device"
        self.device_id: str | None = None
        self.errors = 0
        self.closed = False
        self._out: list[str] = []
        self._accept = FROM_DEVICE if side == "orchestrator" else FROM_ORCHESTRATOR

    @property
    def should_close(self) -> bool:
        """True once the peer has sent more bad messages than ``max_errors``."""
        return self.closed or self.errors > self.max_errors

    def receive(self, data: str | bytes) -> list[Any]:
        """Feed one frame; return the messages to act on (one, or several from a BATCH, in
        order). Never raises."""
        if self.closed:
            return []
        try:
            obj = _parse(data, self.max_bytes)
            if obj.get("type") != "BATCH":
                return self._accept_one(obj)
            out: list[Any] = []
            for item in _batch_items(obj):
                out.extend(self._accept_one(item))
            return out
        except ProtocolError as exc:
            self._error(exc.code, str(exc))
            return []
        except Exception as exc:  # the last line of defence: bad input must never crash us
            self._error("internal", type(exc).__name__)
            return []

    def _accept_one(self, obj: Any) -> list[Any]:
        """One message through the state machine; [] (and an ERROR queued) if refused."""
        try:
            msg = _message(obj)
            if not isinstance(msg, self._accept):
                raise ProtocolError("wrong_direction",
                                    f"{msg.type} is not sent by the {_peer(self.side)}")
            if isinstance(msg, ErrorMsg):
                return [msg]  # errors are reported to the caller, never answered (no ping-pong)
            if self.side == "orchestrator":
                if not self.registered and not isinstance(msg, Register):
                    raise ProtocolError("out_of_order", f"{msg.type} before REGISTER; send REGISTER first")
                if self.registered and isinstance(msg, Register):
                    raise ProtocolError("out_of_order", "REGISTER sent twice on one connection")
                if isinstance(msg, Register):
                    self.registered = True
                    self.device_id = msg.device_id
            return [msg]
        except ProtocolError as exc:
            self._error(exc.code, str(exc))
            return []
        except RecursionError:
            self._error("malformed", "message nested too deeply")
            return []

    def _error(self, code: str, message: str) -> None:
        self.errors += 1
        self._out.append(encode(ErrorMsg(code=code, message=message)))

    def send(self, msg: BaseModel) -> None:
        """Queue a message for the peer; a message of the wrong direction is a bug here."""
        own = FROM_ORCHESTRATOR if self.side == "orchestrator" else FROM_DEVICE
        if not isinstance(msg, own):
            raise ProtocolError("wrong_direction", f"the {self.side} cannot send {type(msg).__name__}")
        if not self.closed:
            self._out.append(encode(msg))

    def data_to_send(self) -> list[str]:
        """Take the queued frames."""
        out, self._out = self._out, []
        return out

    def close(self) -> None:
        self.closed = True


def _peer(side: str) -> str:
    return "device" if side == "orchestrator" else "orchestrator"
