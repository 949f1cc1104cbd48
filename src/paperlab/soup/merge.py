"""The merge engine's public entry: N checkpoints in, one sharded checkpoint out, safely.

:func:`merge` prepares the merge (:mod:`paperlab.soup.preparation`: every input located, opened and
checked before any tensor data is read), streams it (:mod:`paperlab.soup.pipeline`) into a
temporary sibling directory, adds the config, tokenizer and record, and renames the directory
into place (:func:`paperlab.io.atomic.atomic_directory`): a crash, Ctrl-C or SIGTERM leaves
nothing that looks like a finished model, and a run killed outright (SIGKILL) leaves a partial
directory that the next run for the same output removes.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from paperlab.io.atomic import atomic_directory, sweep_partials
from paperlab.soup.checkpoint import TOKENIZER_FILES
from paperlab.soup.config import MergeSpec
from paperlab.soup.errors import SoupError
from paperlab.soup.pipeline import ProgressFn, run_prepared
from paperlab.soup.preparation import PreparedMerge, prepare

log = logging.getLogger(__name__)

CONFIG_FILES = ("config.json", "generation_config.json")
RECORD = "paperlab_merge.yaml"


@dataclass
class MergeResult:
    """What a merge produced."""

    out_dir: Path
    n_tensors: int
    out_bytes: int
    shards: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _write_config(prep: PreparedMerge, out_tmp: Path) -> None:
    cfg_path = out_tmp / "config.json"
    cfg = json.loads((prep.source / "config.json").read_text())
    # transformers 5 reads `dtype`, older versions `torch_dtype`; keep both in step.
    cfg["torch_dtype"] = prep.plan.out_dtype
    if "dtype" in cfg:
        cfg["dtype"] = prep.plan.out_dtype
    if prep.vocab is not None:
        target = cfg["text_config"] if "vocab_size" not in cfg and isinstance(cfg.get("text_config"), dict) else cfg
        target["vocab_size"] = prep.vocab.rows
    if prep.out_layers is not None:
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if key in cfg:
                cfg[key] = prep.out_layers
        # Per-layer lists (Qwen3's layer_types) follow the layers they describe.
        if isinstance(cfg.get("layer_types"), list):
            value = cfg["layer_types"]
            src_cfgs = [prep.readers[r].config.get("layer_types") for r, _ in prep.layer_sources]
            cfg["layer_types"] = [c[i] if isinstance(c, list) and i < len(c) else value[0]
                                  for c, (_, i) in zip(src_cfgs, prep.layer_sources, strict=True)]
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def _write_side_files(prep: PreparedMerge, spec: MergeSpec, out_tmp: Path) -> None:
    """config.json (dtype, layers and vocabulary size updated), generation config, tokenizer
    (the donor's files, or the built output tokenizer), and the chat template."""
    _write_config(prep, out_tmp)
    src = prep.source / "generation_config.json"
    if src.is_file():
        shutil.copyfile(src, out_tmp / src.name)
    if prep.vocab is not None:
        prep.vocab.tokenizer.save_pretrained(str(out_tmp))
    elif spec.copy_tokenizer:
        for name in TOKENIZER_FILES:
            if (prep.source / name).is_file():
                shutil.copyfile(prep.source / name, out_tmp / name)
    if prep.chat_template is not None:
        from paperlab.soup.chat_template import apply

        apply(out_tmp, prep.chat_template)


def _model_card(spec: MergeSpec, prep: PreparedMerge) -> str:
    refs = [m.model for m in spec.models] + [s.model for sl in spec.slices or [] for s in sl.sources]
    lines = ["---", "library_name: transformers", "tags: [merge, paperlab]", "---", "",
             f"# {spec.method} merge", "", f"A `{spec.method}` merge made with `paperlab soup merge`"
             + (f" on the base model `{spec.base_model}`" if spec.base_model else "") + " of:", ""]
    lines += [f"- `{r}`" for r in dict.fromkeys(refs)]
    lines += ["", f"Output dtype {prep.plan.out_dtype}; arithmetic in "
              f"{'float32' if spec.compute_dtype == 'float32' else (spec.dtype or 'the inputs dtype')}.",
              "The full configuration is in `paperlab_merge.yaml`.", ""]
    return "\n".join(lines)


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
        q = Path(p.split("+")[0].split("@")[0]).resolve()
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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGINT during a merge, raised in the main thread so that the partial output is
    removed on the way out; ``signum`` says which (the CLI exits 128 + signum)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.signum = int(message.rsplit(" ", 1)[-1]) if message.rsplit(" ", 1)[-1].isdigit() else signal.SIGTERM


def merge(
    spec: MergeSpec,
    out_dir: str | Path,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    write_model_card: bool = True,
) -> MergeResult:
    """Merge the spec's models into ``out_dir`` (atomically).

    Args:
        spec: models, weights, method and options.
        out_dir: the output directory; must not exist unless ``force`` (which replaces only an
            earlier paperlab output or an empty directory, never an input model).
        force: replace an existing ``out_dir`` (only once the new one is complete).
        progress: called with (bytes written, total bytes) as shards fill.
        write_model_card: write a README.md model card, as mergekit does.

    Returns:
        A :class:`MergeResult`.

    Raises:
        SoupError: invalid inputs, found before any tensor data is read; a full disk or another
            write error (the partial output is removed).
        Terminated: SIGTERM or Ctrl-C (the partial output is removed).
    """
    import torch  # noqa: F401  (imported before the clock starts: its start-up is not merge time)

    from paperlab.interrupts import SignalWatch

    start = time.perf_counter()
    out = Path(out_dir)
    check_output(out, spec, force=force)
    removed, kept = sweep_partials(out)
    prep = prepare(spec)
    prep.plan.notes += [f"removed {p}, the partial output of an earlier run that was killed" for p in removed]
    prep.plan.notes += [f"{p} looks like the partial output of an earlier run; remove it if no merge is running"
                        for p in kept]
    # Python drops an exception raised inside a finaliser or weakref callback, so a signal
    # landing there would not stop the merge: the watch is checked again before the commit.
    signalled = SignalWatch(signal.SIGTERM, signal.SIGINT, raise_as=Terminated).install()
    try:
        with atomic_directory(out, force=force, error=SoupError) as tmp:
            shards = run_prepared(
                prep, tmp, shard_size=spec.shard_size, chunk_elements=spec.chunk_elements, progress=progress
            )
            _write_side_files(prep, spec, tmp)
            record = spec.model_dump(mode="json", exclude_defaults=True)
            record["weights_used"] = prep.weights_used
            record["notes"] = prep.plan.notes
            (tmp / RECORD).write_text(yaml.safe_dump(record, sort_keys=False))
            if write_model_card:
                (tmp / "README.md").write_text(_model_card(spec, prep))
            if signalled.is_set():  # a signal whose exception Python swallowed: still stop
                raise Terminated(f"signal {signal.SIGTERM}")
    except OSError as exc:
        raise _os_error(exc, out) from None
    finally:
        signalled.restore()
    total = sum(prep.plan.out_nbytes(n) for n in prep.plan.names)
    return MergeResult(out, len(prep.plan.names), total, shards, time.perf_counter() - start, prep.plan.notes)


merge_checkpoints = merge  # the package-level name (``paperlab.soup.merge`` is this module)
