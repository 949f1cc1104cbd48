"""The streaming merge pipeline: three threads joined by small bounded queues.

    reader  -> reads piece p of tensor t from every model (plain file reads, GIL released; for
               methods that only read their inputs, the files' pages mapped instead of copied)
    compute -> combines the pieces (on the CPU or ``--device``) and casts once to the output dtype
    writer  -> appends the bytes to the current shard (GIL released)

A piece is a whole tensor, or for elementwise methods a slice of at most ``chunk_elements``
elements, so peak memory is about (N + 1) x 4 input pieces + one float32 accumulator + 4 output
pieces: bounded by the piece size, not the model size. Whole-tensor inputs larger than a piece
get buffers of their own, and the reader holds at most one such tensor group ahead of the
compute thread, so methods that need whole tensors hold about one tensor group at a time.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from paperlab.soup.errors import CheckpointError
from paperlab.soup.jobs import Job
from paperlab.soup.methods.spares import SPARES
from paperlab.soup.preparation import PreparedMerge
from paperlab.soup.writer import OutTensor, ShardedWriter

_QUEUE_DEPTH = 2
_POLL_S = 0.1

ProgressFn = Callable[[int, int], None]  # (bytes done so far, total bytes)


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


def _quiet(fn: Callable[[], None]) -> None:
    with contextlib.suppress(OSError):
        fn()


class _Pool:
    """A fixed set of reusable byte buffers, and one-off buffers for whole tensors larger than
    a piece, of which at most ``oneoff_limit`` bytes exist at once (the taker waits).

    Reusing buffers matters: a fresh large allocation costs a page fault per 4 KiB on first
    touch, which was a third of the merge time."""

    def __init__(self, pipe: _Pipeline, nbytes: int, count: int, oneoff_limit: int) -> None:
        import torch

        self.pipe, self.nbytes = pipe, nbytes
        self.free: queue.Queue[Any] = queue.Queue()
        for _ in range(count):
            self.free.put(torch.empty(nbytes, dtype=torch.uint8))
        self.limit = oneoff_limit
        self.oneoff = 0
        self.cond = threading.Condition()

    def reserve(self, need: int) -> None:
        """Wait until ``need`` more one-off bytes fit (always lets one group through)."""
        with self.cond:
            while self.oneoff and self.oneoff + need > self.limit:
                if self.pipe.stop.is_set():
                    raise _Stopped
                self.cond.wait(_POLL_S)
            self.oneoff += need

    def release(self, n: int) -> None:
        with self.cond:
            self.oneoff -= n
            self.cond.notify_all()

    def take(self, need: int) -> Any:
        import torch

        if need > self.nbytes:
            return torch.empty(need, dtype=torch.uint8)
        return self.pipe.get(self.free)

    def give(self, buf: Any) -> None:
        if buf.numel() == self.nbytes:
            self.free.put(buf)


def _return_large_blocks(size: int = 1 << 20) -> None:
    """Have glibc hand blocks of ``size`` bytes (1 MiB unless the method asks otherwise, see
    ``MergeMethod.system_blocks``) and more straight back to the system when freed.

    By default glibc raises its mmap threshold to the size of each large block freed (up to
    32 MiB), after which such blocks come from per-thread heaps that keep freed memory: whole
    tensor methods, which allocate tens of MiB per tensor in three threads, grew by hundreds of
    MB that way (3 x 0.25B bf16 TIES: peak RSS 1516 MB against 1313 MB with the threshold fixed).
    Elsewhere (another libc) this does nothing."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
        # M_TRIM_THRESHOLD: past 1 MiB, keep a few freed heap blocks of that size instead of
        # trimming them at once; at 1 MiB, glibc's default (128 KiB), whatever an earlier merge
        # in this process set.
        libc.mallopt(-1, 4 * size if size > 1 << 20 else 128 << 10)


def _pieces(prep: PreparedMerge, chunk_elements: int) -> Iterator[tuple[Job, int, int]]:
    for job in prep.jobs:
        n = prep.plan.infos[job.name].numel
        whole = not prep.method.elementwise or job.vocab
        step = max(n, 1) if whole else chunk_elements
        for start in range(0, max(n, 1), step):
            yield job, start, min(n, start + step)


def _reindexed(prep: PreparedMerge, job: Job) -> list[Any]:
    """A vocabulary job's inputs (and base), each re-indexed to the output vocabulary."""
    import torch

    from paperlab.soup.vocab import reindex

    assert prep.vocab is not None and job.params is not None
    sources = [*job.inputs, *([job.base] if job.base else [])]
    dt = getattr(torch, job.params.compute)
    tensors = {}
    for r, name in sources:
        info = prep.readers[r].tensors[name]
        tensors[r] = prep.readers[r].read(name).to(dt).reshape(info.shape)
    out = reindex(prep.vocab, tensors)
    return [out[r].reshape(-1) for r, _ in sources]


def run_prepared(
    prep: PreparedMerge, out_tmp: Path, *, shard_size: int, chunk_elements: int, progress: ProgressFn | None
) -> int:
    """Stream the merge into ``out_tmp`` (weights only). Returns the number of output shards."""
    import torch

    plan = prep.plan
    _return_large_blocks(prep.method.system_blocks)
    outs = [OutTensor(n, plan.out_dtype_of(n), plan.shape_of(n), plan.out_nbytes(n)) for n in plan.names]
    writer = ShardedWriter(out_tmp, outs, shard_size)
    total = writer.total_bytes
    pipe = _Pipeline()
    # Whole-tensor methods are compute-bound: one piece queued each way keeps the threads busy,
    # and each queued piece holds buffers of its own.
    depth = _QUEUE_DEPTH if prep.method.elementwise else 1
    q_in: queue.Queue[Any] = queue.Queue(depth)
    q_out: queue.Queue[Any] = queue.Queue(depth)
    readers = prep.readers
    in_flight = depth + 2  # queued + being produced + being consumed
    width = max(len(j.inputs) + (1 if j.base else 0) for j in prep.jobs) if prep.jobs else 1

    def group_bytes(j: Job) -> int:
        return sum(readers[r].tensors[n].nbytes for r, n in [*j.inputs, *([j.base] if j.base else [])])

    largest = max((group_bytes(j) for j in prep.jobs), default=0)
    in_pool = _Pool(pipe, chunk_elements * 8, width * in_flight, largest)
    out_pool = _Pool(pipe, chunk_elements * 8, in_flight, largest)
    device = torch.device(prep.device)
    on_cpu = device.type == "cpu"
    acc = None
    if on_cpu and prep.method.elementwise:
        acc = torch.empty(chunk_elements, dtype=torch.float32)
    elif on_cpu and prep.method.writes_out:  # one buffer for every result instead of a fresh one each
        acc = torch.empty(max((plan.numel_of(j.name) for j in prep.jobs), default=0), dtype=torch.float32)

    def read_loop() -> None:
        try:
            for job, a, b in _pieces(prep, chunk_elements):
                sources = [*job.inputs, *([job.base] if job.base else [])]
                bufs: list[Any] = []
                if job.vocab:
                    held = group_bytes(job)
                    in_pool.reserve(held)
                    tensors = _reindexed(prep, job)
                else:
                    need = (b - a) * plan.infos[job.name].itemsize
                    held = need * len(sources) if need > in_pool.nbytes else 0
                    if held:
                        in_pool.reserve(held)
                    views = [readers[r].mapped(n, a, b) for r, n in sources] if prep.method.reads_only else []
                    if views and all(v is not None for v in views):
                        tensors = views  # the files' own pages: no copy, no buffer
                    else:
                        bufs = [in_pool.take(need) for _ in sources]
                        tensors = [readers[r].read(n, a, b, out=buf)
                                   for (r, n), buf in zip(sources, bufs, strict=True)]
                    del views
                if not pipe.put(q_in, (job, tensors, bufs, held)):
                    return
            pipe.put(q_in, None)
        except _Stopped:
            pass
        except OSError as exc:  # an input that cannot be read is not a write error
            pipe.fail(CheckpointError(f"cannot read the input models: {exc.strerror or exc}; check the files"))
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
                name, buf, n, held = item
                writer.write(name, memoryview(buf.numpy())[:n])
                out_pool.give(buf)
                if held:
                    out_pool.release(held)
                done += n
                if progress is not None:
                    progress(done, total)
        except _Stopped:
            _quiet(writer.abort)
        except BaseException as exc:
            # Stop the pipeline first: closing a file on a full disk raises again, and a writer
            # that died before saying so would leave the others waiting for ever.
            pipe.fail(exc)
            _quiet(writer.abort)

    threads = [
        threading.Thread(target=read_loop, name="soup-read", daemon=True),
        threading.Thread(target=write_loop, name="soup-write", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        while True:
            item = pipe.get(q_in)
            if item is None:
                pipe.put(q_out, None)
                break
            job, tensors, bufs, held = item
            del item  # mapped inputs are unmapped as soon as the last reference goes
            out_dtype = getattr(torch, plan.out_dtype_of(job.name))
            n_out = tensors[0].numel() * torch.empty((), dtype=out_dtype).element_size()
            out_held = n_out if n_out > out_pool.nbytes else 0
            if out_held:
                out_pool.reserve(out_held)
            out_buf = out_pool.take(n_out)
            out_view = out_buf[:n_out].view(out_dtype)
            if job.params is not None:
                k = len(job.inputs)
                ins = tensors if on_cpu else [x.to(device, non_blocking=True) for x in tensors]
                result = prep.method.combine(ins[:k], ins[k] if job.base else None, job.params, out=acc)
                out_view.copy_(result)
                del ins, result
            else:
                out_view.copy_(tensors[0])  # integer/bool buffers are copied from the first model
            del tensors
            for buf in bufs:
                in_pool.give(buf)
            if held:
                in_pool.release(held)
            if not pipe.put(q_out, (job.name, out_buf, n_out, out_held)):
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
        SPARES.clear()  # buffers kept between tensors are not kept between merges
    if pipe.error is not None:
        raise pipe.error
    return len(writer.files)
