"""The streaming merge engine: N checkpoint directories in, one sharded checkpoint out.

Three threads form a pipeline, joined by small bounded queues so that memory stays bounded:

    reader  -> reads piece p of tensor t from every model (plain file reads, GIL released)
    compute -> combines the pieces in float32 and casts once to the output dtype (torch ops)
    writer  -> appends the bytes to the current shard (GIL released)

A piece is a whole tensor, or for elementwise methods a slice of at most ``chunk_elements``
elements, so peak memory is about 3 x (N + 1) input pieces + 2 float32 buffers + 2 output pieces:
bounded by the piece size, not the model size (and for TIES by the largest tensor).

Output is built in a temporary sibling directory and renamed into place when complete
(:func:`paperlab.io.atomic.atomic_directory`), so a crash or Ctrl-C leaves nothing behind
that looks like a finished model.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paperlab.io.atomic import atomic_directory
from paperlab.soup.checkpoint import FLOAT_DTYPES, Checkpoint, open_checkpoint
from paperlab.soup.config import MergeSpec
from paperlab.soup.errors import CheckpointError, SoupError, WeightsError
from paperlab.soup.methods import MergeMethod, MethodParams, get_method
from paperlab.soup.validate import MergePlan, check_finite, plan_merge
from paperlab.soup.writer import OutTensor, ShardedWriter

log = logging.getLogger(__name__)

# Files copied from the source model besides the weights.
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
_QUEUE_DEPTH = 2
_POLL_S = 0.1

ProgressFn = Callable[[int, int], None]  # (bytes done so far, total bytes)


@dataclass
class MergeResult:
    """What a merge produced."""

    out_dir: Path
    n_tensors: int
    out_bytes: int
    shards: int
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass
class PreparedMerge:
    """A validated merge, ready to run: opened checkpoints, method, parameters and plan."""

    models: list[Checkpoint]
    base: Checkpoint | None
    method: MergeMethod
    params: MethodParams
    plan: MergePlan
    source: Path


def prepare(spec: MergeSpec) -> PreparedMerge:
    """Open and validate every input, with no tensor data read (except for ``check_finite``).

    Raises:
        SoupError: a one-line error for each bad-input class (see :mod:`paperlab.soup.validate`).
    """
    method = get_method(spec.method)
    if method.needs_base and not spec.base_model:
        raise WeightsError(f"method {method.name!r} needs a base model; give base_model (or --base)")
    if not method.needs_base and spec.base_model:
        raise WeightsError(f"method {method.name!r} takes no base model; drop base_model or use task_arithmetic/ties")
    normalize = spec.normalize if spec.normalize is not None else method.name == "linear"
    weights = method.resolve(spec.weights, len(spec.models), normalize=normalize)
    models = [open_checkpoint(m.model, allow_pickle=spec.allow_pickle) for m in spec.models]
    base = open_checkpoint(spec.base_model, allow_pickle=spec.allow_pickle) if spec.base_model else None
    plan = plan_merge(models, base=base, out_dtype=spec.dtype)
    if spec.check_finite:
        check_finite([*models, *([base] if base else [])], plan.names)
    source = Path(spec.source) if spec.source else models[0].path
    if not (source / "config.json").is_file():
        raise CheckpointError(f"config source {source} has no config.json; choose a model directory as source")
    params = MethodParams(weights=weights, normalize=normalize, scale=spec.scale, density=spec.density)
    return PreparedMerge(models, base, method, params, plan, source)


def _pieces(prep: PreparedMerge, chunk_elements: int) -> Iterator[tuple[str, int, int]]:
    for name in prep.plan.names:
        n = prep.plan.infos[name].numel
        step = chunk_elements if prep.method.elementwise else max(n, 1)
        for start in range(0, max(n, 1), step):
            yield name, start, min(n, start + step)


class _Pipeline:
    """Runs reader and writer threads around the calling (compute) thread."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stop.set()

    def put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        raise _Stopped


class _Stopped(Exception):
    pass


class _Pool:
    """A fixed set of reusable byte buffers. Reusing them matters: a fresh large allocation
    costs a page fault per 4 KiB on first touch, which was a third of the merge time."""

    def __init__(self, pipe: _Pipeline, nbytes: int, count: int) -> None:
        import torch

        self.pipe, self.nbytes = pipe, nbytes
        self.free: queue.Queue[Any] = queue.Queue()
        for _ in range(count):
            self.free.put(torch.empty(nbytes, dtype=torch.uint8))

    def take(self, need: int) -> Any:
        import torch

        if need > self.nbytes:  # a whole large tensor (non-elementwise methods): one-off buffer
            return torch.empty(need, dtype=torch.uint8)
        return self.pipe.get(self.free)

    def give(self, buf: Any) -> None:
        if buf.numel() == self.nbytes:
            self.free.put(buf)


def run_prepared(
    prep: PreparedMerge, out_tmp: Path, *, shard_size: int, chunk_elements: int, progress: ProgressFn | None
) -> int:
    """Stream the merge into ``out_tmp`` (weights only). Returns the number of output shards."""
    import torch

    plan = prep.plan
    outs = [OutTensor(n, plan.out_dtype_of(n), plan.infos[n].shape, plan.out_nbytes(n)) for n in plan.names]
    writer = ShardedWriter(out_tmp, outs, shard_size)
    total = writer.total_bytes
    pipe = _Pipeline()
    q_in: queue.Queue[Any] = queue.Queue(_QUEUE_DEPTH)
    q_out: queue.Queue[Any] = queue.Queue(_QUEUE_DEPTH)
    readers = [*prep.models, *([prep.base] if prep.base else [])]
    n_models = len(prep.models)
    in_flight = _QUEUE_DEPTH + 2  # queued + being produced + being consumed
    in_pool = _Pool(pipe, chunk_elements * 8, len(readers) * in_flight)
    out_pool = _Pool(pipe, chunk_elements * 8, in_flight)
    acc = torch.empty(chunk_elements, dtype=torch.float32) if prep.method.elementwise else None

    def read_loop() -> None:
        try:
            for name, a, b in _pieces(prep, chunk_elements):
                need = (b - a) * plan.infos[name].itemsize
                bufs = [in_pool.take(need) for _ in readers]
                tensors = [ck.read(name, a, b, out=buf) for ck, buf in zip(readers, bufs, strict=True)]
                if not pipe.put(q_in, (name, tensors, bufs)):
                    return
            pipe.put(q_in, None)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the main thread, which re-raises it
            pipe.fail(exc)

    def write_loop() -> None:
        done = 0
        try:
            while True:
                item = pipe.get(q_out)
                if item is None:
                    writer.close()
                    return
                name, buf, n = item
                writer.write(name, memoryview(buf.numpy())[:n])
                out_pool.give(buf)
                done += n
                if progress is not None:
                    progress(done, total)
        except _Stopped:
            writer.abort()
        except BaseException as exc:
            writer.abort()
            pipe.fail(exc)

    threads = [
        threading.Thread(target=read_loop, name="soup-read", daemon=True),
        threading.Thread(target=write_loop, name="soup-write", daemon=True),
    ]
    # One torch thread: the second core is busy reading and writing, and on a shared
    # 2-core machine two intra-op threads mostly wait for each other.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for t in threads:
        t.start()
    try:
        while True:
            item = pipe.get(q_in)
            if item is None:
                pipe.put(q_out, None)
                break
            name, tensors, bufs = item
            out_dtype = getattr(torch, plan.out_dtype_of(name))
            n_out = tensors[0].numel() * torch.empty((), dtype=out_dtype).element_size()
            out_buf = out_pool.take(n_out)
            out_view = out_buf[:n_out].view(out_dtype)
            if plan.infos[name].dtype in FLOAT_DTYPES:
                base = tensors[n_models] if prep.base else None
                out_view.copy_(prep.method.combine(tensors[:n_models], base, prep.params, out=acc))
            else:
                out_view.copy_(tensors[0])  # integer/bool buffers are copied from the first model
            for buf in bufs:
                in_pool.give(buf)
            if not pipe.put(q_out, (name, out_buf, n_out)):
                break
        threads[1].join()
    except _Stopped:
        pass
    except BaseException as exc:
        pipe.fail(exc)
    finally:
        pipe.stop.set()  # normal end: threads are done; error or Ctrl-C: stop them
        for t in threads:
            t.join()
        for ck in readers:
            ck.close()
        torch.set_num_threads(torch_threads)
    if pipe.error is not None:
        raise pipe.error
    return len(writer.files)


def _copy_side_files(source: Path, out_tmp: Path, out_dtype: str) -> None:
    for name in SIDE_FILES:
        src = source / name
        if src.is_file():
            shutil.copyfile(src, out_tmp / name)
    cfg_path = out_tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # transformers 5 reads `dtype`, older versions `torch_dtype`; keep both in step.
    cfg["torch_dtype"] = out_dtype
    if "dtype" in cfg:
        cfg["dtype"] = out_dtype
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def merge(
    spec: MergeSpec,
    out_dir: str | Path,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> MergeResult:
    """Merge the spec's models into ``out_dir`` (atomically).

    Args:
        spec: models, weights, method and options.
        out_dir: the output directory; must not exist unless ``force``.
        force: replace an existing ``out_dir`` (only once the new one is complete).
        progress: called with (bytes written, total bytes) as shards fill.

    Returns:
        A :class:`MergeResult`.

    Raises:
        SoupError: invalid inputs, found before any tensor data is read.
    """
    import torch  # noqa: F401  (imported before the clock starts: its start-up is not merge time)

    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not force:
        raise SoupError(f"output directory {out} already exists; choose another path or pass --force")
    prep = prepare(spec)
    with atomic_directory(out, force=force, error=SoupError) as tmp:
        shards = run_prepared(
            prep, tmp, shard_size=spec.shard_size, chunk_elements=spec.chunk_elements, progress=progress
        )
        _copy_side_files(prep.source, tmp, prep.plan.out_dtype)
        record = spec.model_dump(mode="json")
        record["weights_used"] = list(prep.params.weights)
        (tmp / "paperlab_merge.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    total = sum(prep.plan.out_nbytes(n) for n in prep.plan.names)
    return MergeResult(out, len(prep.plan.names), total, shards, time.perf_counter() - start, prep.plan.notes)


merge_checkpoints = merge  # the package-level name (``paperlab.soup.merge`` is this module)
