"""AIP: the pure session state machine, and a fuzzed decoder that only ever raises ProtocolError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paperlab.galaxy.errors import ProtocolError
from paperlab.galaxy.protocol.aip import (
    MAX_BATCH,
    PROTOCOL_VERSION,
    Batch,
    Cancel,
    Heartbeat,
    Register,
    Session,
    Task,
    TaskResult,
    batch_frames,
    decode,
    encode,
    encode_batch,
)


def reg(dev: str = "d1") -> str:
    return encode(Register(device_id=dev, capabilities=["gpu"]))


def errors(s: Session) -> list[dict]:
    return [json.loads(f) for f in s.data_to_send()]


def test_roundtrip_every_message() -> None:
    msgs = [Register(device_id="d", capabilities=["a"], running=["r/x/1"]), Heartbeat(running=[]),
            Task(task_id="x", attempt_id="r/x/1", executor={"kind": "echo"}, timeout=1),
            Cancel(attempt_id="r/x/1"), TaskResult(task_id="x", attempt_id="r/x/1", status="completed",
                                                   result={"a": [1]})]
    for m in msgs:
        assert decode(encode(m)) == m
        assert json.loads(encode(m))["v"] == PROTOCOL_VERSION


def result(i: int) -> TaskResult:
    return TaskResult(task_id=f"t{i}", attempt_id=f"r/t{i}/1", status="completed", result=i)


def test_batch_carries_messages_in_order_each_checked_alone() -> None:
    s = Session("orchestrator")
    beat = encode(Heartbeat(running=["r/t0/1"]))
    bad = json.dumps({"v": PROTOCOL_VERSION, "type": "TASK_RESULT", "task_id": "t9"})  # no status
    got = s.receive(encode_batch([reg(), encode(result(0)), bad, beat, encode(result(1))]))
    assert [type(m).__name__ for m in got] == ["Register", "TaskResult", "Heartbeat", "TaskResult"]
    assert [m.result for m in got if isinstance(m, TaskResult)] == [0, 1]
    replies = errors(s)
    assert len(replies) == 1 and replies[0]["code"] == "invalid" and "TASK_RESULT" in replies[0]["message"]
    assert decode(encode_batch([encode(result(2)), beat])) == Batch(messages=[result(2), Heartbeat(running=["r/t0/1"])])


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (encode_batch([encode_batch([encode(Heartbeat())])]), "invalid"),  # no BATCH in a BATCH
        (json.dumps({"v": PROTOCOL_VERSION, "type": "BATCH", "messages": []}), "invalid"),
        (json.dumps({"v": PROTOCOL_VERSION, "type": "BATCH", "messages": [{}] * (MAX_BATCH + 1)}), "invalid"),
        (json.dumps({"v": PROTOCOL_VERSION, "type": "BATCH", "messages": "x"}), "invalid"),
        (json.dumps({"v": 1, "type": "BATCH", "messages": [json.loads(encode(Heartbeat()))]}), "version"),
        (json.dumps({"v": 1, "type": "HEARTBEAT"}), "version"),  # a v1 peer is told, not ignored
        (encode_batch(["[1]"]), "malformed"),
        (encode_batch([encode(Task(task_id="x", attempt_id="a", executor={"kind": "echo"}, timeout=1))]),
         "wrong_direction"),
    ],
)
def test_bad_batches_get_error(frame: str, code: str) -> None:
    s = Session("orchestrator")
    assert s.receive(reg())
    assert s.receive(frame) == []
    assert errors(s)[0]["code"] == code


def test_batch_frames_bounds_count_and_bytes() -> None:
    frames = [encode(result(i)) for i in range(600)]
    out = batch_frames(frames)
    assert len(out) == 3  # 256 + 256 + 88 messages
    s = Session("orchestrator")
    assert s.receive(reg())
    got = [m for f in out for m in s.receive(f)]
    assert [m.result for m in got] == list(range(600)) and s.data_to_send() == []
    assert batch_frames(frames[:1]) == frames[:1]  # a lone message is not wrapped
    big = ["x" * 40_000, "y" * 40_000, "z" * 10]  # the byte budget splits them
    assert batch_frames(big, budget=64 * 1024) == [big[0], encode_batch(big[1:])]


def test_register_must_come_first_and_once() -> None:
    s = Session("orchestrator")
    assert s.receive(encode(Heartbeat())) == []
    assert errors(s)[0]["code"] == "out_of_order"
    assert isinstance(s.receive(reg())[0], Register) and s.device_id == "d1"
    assert s.receive(reg()) == []
    assert errors(s)[0]["code"] == "out_of_order"
    assert isinstance(s.receive(encode(Heartbeat()))[0], Heartbeat)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('{"type": "NOPE"}', "unknown_type"),
        ('{"type": "REGISTER", "v": 99, "device_id": "d"}', "version"),
        ('{"type": "REGISTER", "device_id": "bad id!"}', "invalid"),
        ('{"type": "REGISTER", "device_id": "d", "extra": 1}', "invalid"),
        (encode(Task(task_id="x", attempt_id="a", executor={"kind": "echo"}, timeout=1)), "wrong_direction"),
        ("x" * 2000, "oversized"),
        (b"\xff\xfe", "malformed"),
    ],
)
def test_bad_frames_get_error(frame: str, code: str) -> None:
    s = Session("orchestrator", max_bytes=1000)
    assert s.receive(frame) == []
    assert errors(s)[0]["code"] == code


def test_too_many_errors_closes() -> None:
    s = Session("orchestrator", max_errors=3)
    for _ in range(4):
        s.receive("junk")
    assert s.should_close


def test_device_side_rejects_register_and_cannot_send_task() -> None:
    s = Session("device")
    assert s.receive(reg()) == [] and errors(s)[0]["code"] == "wrong_direction"
    with pytest.raises(ProtocolError):
        s.send(Task(task_id="x", attempt_id="a", executor={"kind": "echo"}, timeout=1))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["REGISTER", "HEARTBEAT", "TASK", "TASK_RESULT", "CANCEL", "ERROR",
                              "DEVICE_INFO", "BATCH", "X"])},
    optional={"v": st.integers(0, 2), "device_id": json_values, "attempt_id": json_values,
              "task_id": json_values, "status": json_values, "result": json_values,
              "capabilities": json_values, "running": json_values, "results": json_values,
              "messages": json_values},
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), message_like.map(json.dumps),
                 json_values.map(json.dumps)))
def test_fuzz_decoder_only_raises_protocol_error(frame: object) -> None:
    try:
        decode(frame, max_bytes=4096)  # type: ignore[arg-type]
    except ProtocolError as exc:
        assert exc.code in {"oversized", "malformed", "version", "unknown_type", "invalid"}


@pytest.mark.slow
@settings(max_examples=120, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=200), message_like.map(json.dumps), st.just(reg())),
                max_size=15))
def test_fuzz_session_never_raises(frames: list[str]) -> None:
    s = Session("orchestrator", max_bytes=4096)
    for f in frames:
        out = s.receive(f)
        assert len(out) <= MAX_BATCH
        for reply in s.data_to_send():
            assert json.loads(reply)["type"] == "ERROR"
