"""From a validated :class:`~paperlab.soup.config.MergeSpec` to a merge ready to run.

Every input is located (local directory, Hugging Face cache, or a download), opened (headers
only, a LoRA adapter attached), checked against the others, and every output tensor gets its
job: inputs, resolved parameters, compute dtype, and whether its rows are re-indexed to an
output vocabulary. No tensor data is read here (except for ``check_finite``), so every bad
input is reported before any heavy work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperlab.soup.checkpoint import FLOAT_DTYPES, Checkpoint, tokenizer_files
from paperlab.soup.config import MergeSpec, ModelEntry
from paperlab.soup.errors import CheckpointError, MergeConfigError, SoupError, WeightsError
from paperlab.soup.jobs import Job, check_count, model_jobs, n_layers_of, resolve_job, slice_jobs
from paperlab.soup.lora import open_located
from paperlab.soup.methods import MergeMethod, get_method
from paperlab.soup.refs import Located, resolve_ref
from paperlab.soup.validate import MergePlan, check_finite_jobs, plan_merge, plan_slices
from paperlab.soup.vocab import VOCAB_SUFFIXES, VocabPlan, build_vocab, is_vocab_tensor, vocab_rows

_LOW = ("float16", "bfloat16")


@dataclass
class PreparedMerge:
    """A validated merge, ready to run: opened checkpoints, method, per-tensor jobs and plan."""

    readers: list[Checkpoint]
    jobs: list[Job]
    method: MergeMethod
    plan: MergePlan
    source: Path  # the donor of config.json and side files
    model_dirs: list[Path] = field(default_factory=list)
    out_layers: int | None = None  # slices: the output's layer count
    layer_sources: list[tuple[int, int]] = field(default_factory=list)
    weights_used: list[float] | None = None
    vocab: VocabPlan | None = None
    chat_template: str | None = None  # the template text to set on the output tokenizer
    device: str = "cpu"


class _Opener:
    """Locates and opens each distinct input once; reader indices in first-use order."""

    def __init__(self, spec: MergeSpec) -> None:
        self.spec = spec
        self.readers: list[Checkpoint] = []
        self.keys: list[str] = []
        self.dirs: list[Path] = []
        self._located: dict[str, Located] = {}

    def locate(self, ref: str) -> Located:
        if ref not in self._located:
            self._located[ref] = resolve_ref(ref, cache_dir=self.spec.hf_cache)
        return self._located[ref]

    def index(self, ref: str) -> int:
        loc = self.locate(ref)
        if loc.key not in self.keys:
            self.readers.append(open_located(loc, allow_pickle=self.spec.allow_pickle))
            self.keys.append(loc.key)
            self.dirs.append(loc.model)
        return self.keys.index(loc.key)

    def same(self, ref: str, index: int) -> bool:
        return self.locate(ref).key == self.keys[index]


def _models_layout(spec: MergeSpec, method: MergeMethod, op: _Opener, notes: list[str]) -> tuple[list[int], int | None,
                                                                                             list[dict[str, Any]]]:
    """Reader indices of the (non-base) models, the base's, and each model's own parameters."""
    entries = list(spec.models)
    base_ref = spec.base_model
    if not entries:
        raise MergeConfigError("no models to merge; give models: (or slices:)")
    if base_ref and method.base == "none":
        raise WeightsError(f"method {method.name!r} takes no base model; drop base_model or use a task-vector "
                           "method (task_arithmetic, ties, ...)")
    if method.base == "required" and not base_ref:
        raise WeightsError(f"method {method.name!r} needs a base model; give base_model (or --base)")
    base_key = op.locate(base_ref).key if base_ref else None
    listed = [e for e in entries if base_key and op.locate(e.model).key == base_key]
    if base_ref and method.base in ("required", "optional") and listed:
        # The base listed under models as well (mergekit's common TIES layout) is the base;
        # mergekit ignores its parameters, and so do we.
        entries = [e for e in entries if op.locate(e.model).key != base_key]
        if any(e.parameters for e in listed):
            notes.append(f"the base model {base_ref} is also under models: its parameters are ignored")
    if base_ref and method.base == "input" and not listed:
        entries.append(ModelEntry(model=base_ref))
        notes.append(f"{method.name} has no base of its own: base_model {base_ref} is one more input, as in mergekit")
    check_count(method, len(entries))
    model_readers = [op.index(e.model) for e in entries]
    base_reader = op.index(base_ref) if base_ref and method.base in ("required", "optional") else None
    return model_readers, base_reader, [e.parameters for e in entries]


def _compute_of(spec: MergeSpec, dtypes: list[str]) -> str:
    """The dtype a job computes in: float32, or with ``--compute-dtype yaml`` the YAML's
    ``dtype`` (else the inputs' promoted dtype, as mergekit)."""
    if spec.compute_dtype == "float32":
        return "float32"
    if spec.dtype:
        return spec.dtype
    floats = {d for d in dtypes if d in FLOAT_DTYPES}
    if len(floats) == 1:
        return floats.pop()
    return "float64" if "float64" in floats else "float32"


def _vocab_plan(spec: MergeSpec, op: _Opener, plan: MergePlan, jobs: list[Job], base_reader: int | None,
                notes: list[str]) -> VocabPlan | None:
    assert spec.tokenizer is not None
    used = sorted({r for j in jobs for r, _ in [*j.inputs, *([j.base] if j.base else [])]})
    models = {r: (op.dirs[r], op.readers[r].config, op.readers[r].label) for r in used}
    tok = spec.tokenizer
    source_dir = op.locate(tok.source).model if tok.source not in ("union", "base") else None

    def token_model(ref: str) -> int:
        for r in used:
            if op.same(ref, r):
                return r
        raise MergeConfigError(f"a tokens: source names {ref}, which is not one of the merged models")

    vp = build_vocab(tok, models, base_reader, source_dir, token_model)
    rows = vocab_rows(op.readers[used[0]].config)
    for job in jobs:
        info = plan.infos.get(job.name)
        if info is not None and not vp.identity and is_vocab_tensor(job.name, info.shape, rows):
            job.vocab = True
            plan.shapes[job.name] = (vp.rows, *info.shape[1:])
    if vp.identity:
        notes.append(f"tokenizer source {tok.source}: every model already has the output vocabulary "
                     f"({vp.rows} tokens); embeddings are merged as they are")
    else:
        notes.append(f"tokenizer source {tok.source}: output vocabulary of {len(vp.vocab)} tokens"
                     f"{f' padded to {vp.rows} rows' if vp.rows > len(vp.vocab) else ''}; embedding rows re-indexed")
    return vp


def _dtype_notes(spec: MergeSpec, notes: list[str]) -> None:
    if spec.compute_dtype == "float32" and spec.dtype in _LOW:
        notes.append(f"dtype: {spec.dtype} is mergekit's compute dtype; paperlab computes in float32 (more accurate) "
                     f"and writes {spec.output_dtype}; --compute-dtype yaml reproduces mergekit's bits")
    elif spec.compute_dtype == "yaml" and not spec.dtype:
        notes.append("--compute-dtype yaml without dtype: in the YAML: computing in the inputs' dtype, as mergekit")


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    import torch

    backend = device.split(":")[0]
    available = torch.cuda.is_available() if backend == "cuda" else bool(
        getattr(getattr(torch, backend, None), "is_available", lambda: False)())
    if not available:
        raise SoupError(f"--device {device}: no such device here (torch.{backend}.is_available() is false); "
                        "drop --device to merge on the CPU")
    if backend == "cuda" and ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise SoupError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s); choose cuda:0")


def prepare(spec: MergeSpec) -> PreparedMerge:
    """Open and validate every input and resolve every tensor's parameters, with no tensor
    data read (except for ``check_finite``).

    Raises:
        SoupError: a one-line error for each bad-input class (see :mod:`paperlab.soup.validate`).
    """
    method = get_method(spec.method)
    _check_device(spec.device)
    notes: list[str] = []
    if "int8_mask" in spec.parameters:
        notes.append("int8_mask: honoured: the sign masks are int8 as in mergekit (the same values as booleans)")
    _dtype_notes(spec, notes)
    op = _Opener(spec)
    reindex = spec.tokenizer is not None
    base_reader: int | None = None
    out_layers: int | None = None
    layer_sources: list[tuple[int, int]] = []
    if spec.slices:
        sp = slice_jobs(spec, method, op.index, op.readers, op.same,
                        (lambda name: name.endswith(VOCAB_SUFFIXES)) if reindex else (lambda name: False))
        jobs = sp.jobs
        plan = plan_slices(op.readers, jobs, out_dtype=spec.output_dtype, allow_crimes=spec.allow_crimes,
                           reindex=reindex)
        jobs = [j for j in jobs if j.name in plan.infos]
        out_layers, layer_sources = sp.n_layers, sp.layer_sources
        first = jobs[0].inputs[0][0] if jobs else 0
        if spec.base_model:
            base_reader = op.index(spec.base_model)
    else:
        model_readers, base_reader, scopes = _models_layout(spec, method, op, notes)
        models = [op.readers[r] for r in model_readers]
        base = op.readers[base_reader] if base_reader is not None else None
        plan = plan_merge(models, base=base, out_dtype=spec.output_dtype, allow_crimes=spec.allow_crimes,
                          reindex=reindex)
        jobs = model_jobs(plan.names, model_readers, base_reader, spec, scopes, n_layers_of(models[0]))
        first = model_readers[0]
    vocab = _vocab_plan(spec, op, plan, jobs, base_reader, notes) if reindex else None
    for job in jobs:
        info = plan.infos[job.name]
        if info.dtype in FLOAT_DTYPES:
            sources = [*job.inputs, *([job.base] if job.base else [])]
            compute = _compute_of(spec, [op.readers[r].tensors[n].dtype for r, n in sources])
            job.params = resolve_job(method, job, plan.shape_of(job.name), spec.seed, compute)
    if spec.check_finite:
        check_finite_jobs(op.readers, jobs)
    donor = op.locate(spec.source).model if spec.source else op.dirs[base_reader if base_reader is not None else first]
    if not (donor / "config.json").is_file():
        raise CheckpointError(f"config source {donor} has no config.json; choose a model directory as source")
    template = _chat_template(spec, donor, op.dirs, vocab)
    plan.notes.extend(notes)
    first_params = next((j.params for j in jobs if j.params is not None), None)
    return PreparedMerge(op.readers, jobs, method, plan, donor, list(op.dirs), out_layers, layer_sources,
                         list(first_params.weights) if first_params else None, vocab, template, spec.device)


def _chat_template(spec: MergeSpec, donor: Path, dirs: list[Path], vocab: VocabPlan | None) -> str | None:
    if not spec.chat_template:
        return None
    from paperlab.soup.chat_template import choose

    template = choose(spec.chat_template, dirs)
    has_tokenizer = vocab is not None or (spec.copy_tokenizer and bool(tokenizer_files(donor)))
    if template is not None and not has_tokenizer:
        raise MergeConfigError(f"chat_template needs a tokenizer in the output, and the donor {donor} has none "
                               "(or --no-copy-tokenizer); give tokenizer_source, or drop chat_template")
    return template
