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

import contextlib
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
from paperlab.soup.errors import CheckpointError, MergeConfigError, SoupError, WeightsError
from paperlab.soup.jobs import Job, check_parameter_names, model_jobs, resolve_job, slice_jobs
from paperlab.soup.methods import MergeMethod, MethodParams, get_method
from paperlab.soup.validate import MergePlan, check_finite_jobs, plan_merge, plan_slices
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
    """A validated merge, ready to run: opened checkpoints, method, per-tensor jobs and plan."""

    readers: list[Checkpoint]
    jobs: list[Job]
    method: MergeMethod
    plan: MergePlan
    source: Path
    out_layers: int | None = None  # slices: the output's layer count
    layer_sources: list[tuple[int, int]] = field(default_factory=list)
    weights_used: list[float] | None = None

    @property
    def params(self) -> MethodParams | None:
        """The first floating job's parameters (the record's ``weights_used``)."""
        return next((j.params for j in self.jobs if j.params is not None), None)


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _check_union(models: list[Checkpoint]) -> str:
    """tokenizer_source: union. Honoured when every model has the same tokenizer (the union is
    then that tokenizer); a real union needs the embeddings permuted, which we refuse."""
    def fingerprint(ck: Checkpoint) -> str | None:
        # The vocabulary (token -> id) and added tokens, not the file's bytes: the same tokenizer
        # saved twice may serialise other fields differently.
        f = ck.path / "tokenizer.json"
        if f.is_file():
            data = json.loads(f.read_text())
            added = sorted((t.get("content"), t.get("id")) for t in data.get("added_tokens") or [])
            return json.dumps([(data.get("model") or {}).get("vocab"), added], sort_keys=True)
        for name in ("tokenizer.model", "vocab.json"):
            g = ck.path / name
            if g.is_file():
                return g.read_bytes().hex()
        return None

    prints = [fingerprint(ck) for ck in models]
    if any(p is None for p in prints):
        missing = next(ck.path for ck, p in zip(models, prints, strict=True) if p is None)
        raise MergeConfigError(f"tokenizer_source: union needs tokenizer files in every model; {missing} has none")
    if len(set(prints)) > 1:
        raise MergeConfigError(
            "tokenizer_source: union with models whose tokenizers differ needs their embedding rows permuted to a "
            "union vocabulary, which paperlab does not do; use tokenizer_source: base or align the tokenizers first"
        )
    return "tokenizer_source: union: every model has the same tokenizer, so the union is that tokenizer"


def prepare(spec: MergeSpec) -> PreparedMerge:
    """Open and validate every input and resolve every tensor's parameters, with no tensor
    data read (except for ``check_finite``).

    Raises:
        SoupError: a one-line error for each bad-input class (see :mod:`paperlab.soup.validate`).
    """
    method = get_method(spec.method)
    check_parameter_names(method, spec)
    notes: list[str] = []
    if "int8_mask" in spec.shared_scope():
        notes.append("int8_mask: honoured as a no-op: paperlab's sign masks are booleans already (same result)")
    open_ck = lambda p: open_checkpoint(p, allow_pickle=spec.allow_pickle)  # noqa: E731
    if spec.slices:
        if spec.models:
            raise MergeConfigError("give either models: or slices:, not both")
        sp = slice_jobs(spec, method, open_ck)
        readers, jobs = sp.readers, sp.jobs
        plan = plan_slices(readers, jobs, out_dtype=spec.dtype)
        jobs = [j for j in jobs if j.name in plan.infos]
        out_layers: int | None = sp.n_layers
        layer_sources = sp.layer_sources
        models = readers
    else:
        if not spec.models:
            raise MergeConfigError("no models to merge; give models: (or slices:)")
        entries = list(spec.models)
        if spec.base_model and (method.needs_base or method.base_optional):
            # The base listed under models as well (mergekit's common TIES layout) is the base;
            # mergekit ignores its weight and density, and so do we.
            listed = [e for e in entries if _same(e.model, spec.base_model)] if Path(spec.base_model).exists() else []
            if listed:
                entries = [e for e in entries if not _same(e.model, spec.base_model)]
                if any(e.parameters or e.weight is not None for e in listed):
                    notes.append(f"the base model {spec.base_model} is also under models: its parameters are ignored")
        if method.needs_base and not spec.base_model:
            raise WeightsError(f"method {method.name!r} needs a base model; give base_model (or --base)")
        if not (method.needs_base or method.base_optional) and spec.base_model:
            raise WeightsError(f"method {method.name!r} takes no base model; drop base_model or use a "
                               "task-vector method (task_arithmetic, ties, ...)")
        n = len(entries)
        if n < method.min_models or (method.max_models is not None and n > method.max_models):
            want = (f"exactly {method.min_models}" if method.max_models == method.min_models
                    else f"at least {method.min_models}")
            extra = " besides the base" if method.needs_base else ""
            raise WeightsError(f"method {method.name!r} takes {want} model(s){extra}, got {n}")
        if not method.takes_weights:
            given = [e.weight if e.weight is not None else e.parameters.get("weight") for e in entries]
            if any(g is not None for g in given) and len({repr(g) for g in given}) > 1:
                raise WeightsError(f"method {method.name!r} takes no weights; drop them or use 'linear'")
        models = [open_ck(e.model) for e in entries]
        base = open_ck(spec.base_model) if spec.base_model else None
        plan = plan_merge(models, base=base, out_dtype=spec.dtype)
        readers = [*models, *([base] if base else [])]
        jobs = model_jobs(plan.names, models, len(models) if base else None, spec, entries)
        out_layers, layer_sources = None, []
    for job in jobs:
        info = plan.infos[job.name]
        if info.dtype in FLOAT_DTYPES:
            job.params = resolve_job(method, job, info.shape, spec.seed)
    if spec.tokenizer_union:
        notes.append(_check_union(models))
    if spec.check_finite:
        check_finite_jobs(readers, jobs)
    source = Path(spec.source) if spec.source else models[0].path
    if not (source / "config.json").is_file():
        raise CheckpointError(f"config source {source} has no config.json; choose a model directory as source")
    plan.notes.extend(notes)
    first = next((j.params for j in jobs if j.params is not None), None)
    return PreparedMerge(readers, jobs, method, plan, source, out_layers, layer_sources,
                         list(first.weights) if first else None)


def _pieces(prep: PreparedMerge, chunk_elements: int) -> Iterator[tuple[Job, int, int]]:
    for job in prep.jobs:
        n = prep.plan.infos[job.name].numel
        step = chunk_elements if prep.method.elementwise else max(n, 1)
        for start in range(0, max(n, 1), step):
            yield job, start, min(n, start + step)


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
    readers = prep.readers
    in_flight = _QUEUE_DEPTH + 2  # queued + being produced + being consumed
    width = max(len(j.inputs) + (1 if j.base else 0) for j in prep.jobs) if prep.jobs else 1
    in_pool = _Pool(pipe, chunk_elements * 8, width * in_flight)
    out_pool = _Pool(pipe, chunk_elements * 8, in_flight)
    acc = torch.empty(chunk_elements, dtype=torch.float32) if prep.method.elementwise else None

    def read_loop() -> None:
        try:
            for job, a, b in _pieces(prep, chunk_elements):
                sources = [*job.inputs, *([job.base] if job.base else [])]
                need = (b - a) * plan.infos[job.name].itemsize
                bufs = [in_pool.take(need) for _ in sources]
                tensors = [readers[r].read(n, a, b, out=buf) for (r, n), buf in zip(sources, bufs, strict=True)]
                if not pipe.put(q_in, (job, tensors, bufs)):
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
                name, buf, n = item
                writer.write(name, memoryview(buf.numpy())[:n])
                out_pool.give(buf)
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
            job, tensors, bufs = item
            name = job.name
            out_dtype = getattr(torch, plan.out_dtype_of(name))
            n_out = tensors[0].numel() * torch.empty((), dtype=out_dtype).element_size()
            out_buf = out_pool.take(n_out)
            out_view = out_buf[:n_out].view(out_dtype)
            if job.params is not None:
                k = len(job.inputs)
                base = tensors[k] if job.base else None
                out_view.copy_(prep.method.combine(tensors[:k], base, job.params, out=acc))
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


RECORD = "paperlab_merge.yaml"


def _copy_side_files(prep: PreparedMerge, out_tmp: Path) -> None:
    source = prep.source
    for name in SIDE_FILES:
        src = source / name
        if src.is_file():
            shutil.copyfile(src, out_tmp / name)
    cfg_path = out_tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # transformers 5 reads `dtype`, older versions `torch_dtype`; keep both in step.
    cfg["torch_dtype"] = prep.plan.out_dtype
    if "dtype" in cfg:
        cfg["dtype"] = prep.plan.out_dtype
    if prep.out_layers is not None:
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if key in cfg:
                cfg[key] = prep.out_layers
        # Per-layer lists (Qwen3's layer_types) follow the layers they describe.
        for key, value in list(cfg.items()):
            if isinstance(value, list) and key == "layer_types":
                src_cfgs = [prep.readers[r].config.get(key) for r, _ in prep.layer_sources]
                cfg[key] = [c[i] if isinstance(c, list) and i < len(c) else value[0]
                            for c, (_, i) in zip(src_cfgs, prep.layer_sources, strict=True)]
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def _spec_paths(spec: MergeSpec) -> list[str]:
    paths = [m.model for m in spec.models]
    for sl in spec.slices or []:
        paths += [s.model for s in sl.sources] + ([sl.base_model] if sl.base_model else [])
    return paths + [p for p in (spec.base_model, spec.source) if p]


def check_output(out: Path, spec: MergeSpec, *, force: bool) -> None:
    """Refuse an output that would destroy something: an existing directory without ``force``,
    with ``force`` one that is neither empty nor an earlier paperlab merge, or any directory
    that is, or holds, an input model.

    Raises:
        SoupError: naming the directory and the fix.
    """
    target = out.resolve()
    for p in _spec_paths(spec):
        q = Path(p).resolve()
        if target == q or target in q.parents:
            raise SoupError(f"output directory {out} is (or holds) the input model {p}; choose another output directory")
    if not out.exists():
        return
    if not force:
        raise SoupError(f"output directory {out} already exists; choose another path or pass --force")
    if not out.is_dir():
        raise SoupError(f"output path {out} exists and is not a directory; remove it or choose another path")
    if any(out.iterdir()) and not (out / RECORD).is_file():
        raise SoupError(f"--force replaces only an earlier paperlab merge output, and {out} is not one "
                        f"(no {RECORD}) and not empty; choose another output directory")


def _os_error(exc: OSError, out: Path) -> SoupError:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SoupError(f"no space left on the device of {out.parent}; free space or choose another output directory")
    what = exc.strerror or str(exc)
    return SoupError(f"cannot write the merge output {out}: {what}; check the directory and its permissions")


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised in the main thread so that the partial output is removed on the
    way out."""


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
        out_dir: the output directory; must not exist unless ``force`` (which replaces only an
            earlier paperlab output or an empty directory, never an input model).
        force: replace an existing ``out_dir`` (only once the new one is complete).
        progress: called with (bytes written, total bytes) as shards fill.

    Returns:
        A :class:`MergeResult`.

    Raises:
        SoupError: invalid inputs, found before any tensor data is read; a full disk or another
            write error (the partial output is removed). SIGTERM and Ctrl-C also remove it.
    """
    import signal

    import torch  # noqa: F401  (imported before the clock starts: its start-up is not merge time)

    from paperlab.interrupts import SignalWatch

    start = time.perf_counter()
    out = Path(out_dir)
    check_output(out, spec, force=force)
    prep = prepare(spec)
    # Python drops an exception raised inside a finaliser or weakref callback, so a signal
    # landing there would not stop the merge: the watch is checked again before the commit.
    signalled = SignalWatch(signal.SIGTERM, signal.SIGINT, raise_as=_Terminated).install()
    try:
        with atomic_directory(out, force=force, error=SoupError) as tmp:
            shards = run_prepared(
                prep, tmp, shard_size=spec.shard_size, chunk_elements=spec.chunk_elements, progress=progress
            )
            _copy_side_files(prep, tmp)
            record = spec.model_dump(mode="json")
            record["weights_used"] = prep.weights_used
            record["notes"] = prep.plan.notes
            (tmp / RECORD).write_text(yaml.safe_dump(record, sort_keys=False))
            if signalled.is_set():  # a signal whose exception Python swallowed: still stop
                raise _Terminated("signal received during the merge")
    except OSError as exc:
        raise _os_error(exc, out) from None
    finally:
        signalled.restore()
    total = sum(prep.plan.out_nbytes(n) for n in prep.plan.names)
    return MergeResult(out, len(prep.plan.names), total, shards, time.perf_counter() - start, prep.plan.notes)


merge_checkpoints = merge  # the package-level name (``paperlab.soup.merge`` is this module)
