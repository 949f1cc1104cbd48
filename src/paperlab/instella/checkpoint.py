"""Instella checkpoint directories: check, load, save, initialise and convert.

A checkpoint is config.json + safetensors weights (one file, or shards with an index), as
released. Before transformers touches a directory we check it ourselves, because
``from_pretrained`` would quietly initialise a missing tensor at random: every problem a user
can bring (wrong model type, missing or truncated shard, a renamed or mis-shaped tensor, a
config that contradicts the weights, pickle-only weights) becomes one line naming the fix.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperlab.instella.errors import CheckpointError, InstellaConfigError, WeightsMismatchError

if TYPE_CHECKING:
    import torch

    from paperlab.instella.configuration import InstellaConfig
    from paperlab.instella.modeling import InstellaForCausalLM

log = logging.getLogger(__name__)

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class CheckedCheckpoint:
    """What :func:`check_checkpoint` found: the raw config and the weight files."""

    path: Path
    config: dict[str, Any]
    weight_files: tuple[Path, ...]
    safetensors: bool
    remote_code: bool  # config.json carries an auto_map (AMD's trust_remote_code layout)


def read_config(path: Path) -> dict[str, Any]:
    """config.json of a checkpoint directory, checked to be an Instella config."""
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; give an Instella checkpoint directory")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json; give an Instella checkpoint directory")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_file} is not valid JSON ({exc}); restore the file") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_file} holds no JSON object; restore the file")
    found = cfg.get("model_type")
    if found != "instella":
        raise CheckpointError(
            f"{path} is not an Instella checkpoint: config.json has model_type {found!r}, "
            "expected 'instella'; load it with its own model class (e.g. paperlab llm hf:DIR)"
        )
    return cfg


def _weight_files(path: Path, allow_pickle: bool) -> tuple[tuple[Path, ...], bool]:
    index = path / SAFE_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(f"{index} is not a safetensors index; restore it") from None
        shards = tuple(sorted({path / str(name) for name in weight_map.values()}))
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(
                f"{path} is missing shard {missing[0]}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + " named in its index; download or copy the missing shard(s)"
            )
        return shards, True
    if (path / SAFE_SINGLE).is_file():
        return (path / SAFE_SINGLE,), True
    pickles = [path / p for p in PICKLE_FILES if (path / p).is_file()]
    if pickles:
        if not allow_pickle:
            raise CheckpointError(
                f"{path} has only pickle weights ({pickles[0].name}), which can run code when "
                "loaded; convert them to safetensors, or pass --allow-pickle if you trust the source"
            )
        return tuple(pickles), False
    raise CheckpointError(f"{path} has no weights (model.safetensors or {SAFE_INDEX}); add them")


def expected_shapes(config: InstellaConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape that ``config`` implies, from a model built on the meta device."""
    import torch

    from paperlab.instella.modeling import InstellaForCausalLM

    with torch.device("meta"):
        model = InstellaForCausalLM(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def _safetensors_shapes(files: tuple[Path, ...]) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for name in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                    shapes[name] = tuple(fh.get_slice(name).get_shape())
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"{f} cannot be read ({exc}); the file is truncated or damaged, copy it again"
            ) from None
    return shapes


def parse_config(raw: dict[str, Any], where: Path | str) -> InstellaConfig:
    """An :class:`InstellaConfig` from a config.json dict, with bad values as one line."""
    from paperlab.instella.configuration import InstellaConfig

    fields = {k: v for k, v in raw.items() if k != "auto_map"}
    try:
        cfg = InstellaConfig(**fields)
    except (TypeError, ValueError, KeyError) as exc:
        raise InstellaConfigError(f"{where}: invalid Instella config ({exc}); fix config.json") from None
    if cfg.rope_type not in ("default", "linear", "dynamic"):
        raise InstellaConfigError(
            f"{where}: rope_scaling type {cfg.rope_type!r} is not supported; use linear or dynamic"
        )
    if cfg.hidden_act != "silu":
        raise InstellaConfigError(f"{where}: hidden_act {cfg.hidden_act!r}; Instella uses 'silu'")
    pad = cfg.pad_token_id
    if pad is not None and not 0 <= pad < cfg.vocab_size:
        raise InstellaConfigError(
            f"{where}: pad_token_id {pad} is outside the vocabulary of {cfg.vocab_size} rows; "
            "fix pad_token_id (the released models use 1)"
        )
    heads, kv = cfg.num_attention_heads, int(cfg.num_key_value_heads or 0)
    if kv <= 0 or heads % kv:
        raise InstellaConfigError(
            f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
        )
    return cfg


def check_checkpoint(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> CheckedCheckpoint:
    """Check that ``path`` is a complete Instella checkpoint whose weights match its config.

    Raises:
        CheckpointError: not a directory, no config.json, another model type, missing or
            truncated shard, pickle-only weights without ``allow_pickle``.
        WeightsMismatchError: a tensor missing, unexpected, or of another shape than the config.
        InstellaConfigError: config.json holds an invalid value.
    """
    p = Path(path).expanduser()
    raw = read_config(p)
    files, is_safe = _weight_files(p, allow_pickle)
    if is_safe:
        cfg = parse_config(raw, p / "config.json")
        want = expected_shapes(cfg)
        have = _safetensors_shapes(files)
        for name, shape in want.items():
            if name not in have:
                raise WeightsMismatchError(
                    f"{p}: tensor {name!r} is missing from the weights; the checkpoint is "
                    "incomplete or uses other tensor names than the released Instella layout"
                )
            if have[name] != shape:
                raise WeightsMismatchError(
                    f"{p}: tensor {name!r} has shape {list(have[name])} but config.json implies "
                    f"{list(shape)}; the config contradicts the weights, fix config.json"
                )
        extra = sorted(set(have) - set(want) - {"lm_head.weight"})
        if extra:
            raise WeightsMismatchError(
                f"{p}: unexpected tensor {extra[0]!r} (not in the Instella layout for this config); "
                "check num_hidden_layers in config.json or the source of the weights"
            )
    return CheckedCheckpoint(p, raw, files, is_safe, "auto_map" in raw)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our CLI draws its own progress; keep stderr clean


def torch_dtype(name: str) -> torch.dtype:
    import torch

    if name not in DTYPES:
        raise InstellaConfigError(f"unknown dtype {name!r}; choose one of: {', '.join(DTYPES)}")
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def load_model(
    path: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    device: str | None = None,
    rope_theta: float | None = None,
    allow_pickle: bool = False,
) -> InstellaForCausalLM:
    """Load an Instella checkpoint (released remote-code layout or paperlab's) natively.

    Args:
        path: the checkpoint directory.
        dtype: "float32", "bfloat16", "float16", or None for the dtype the weights are stored in.
        device: "cpu", "cuda", ...; "auto" to spread the layers over the GPUs and the CPU
            (accelerate's ``device_map="auto"``); None for CUDA when present. Weights are
            read shard by shard onto the target device, never all twice in CPU memory.
        rope_theta: override the RoPE base at load time (long context, Instella-Long style).
        allow_pickle: accept pytorch_model.bin weights (they can run code when unpickled).

    Raises:
        CheckpointError, WeightsMismatchError, InstellaConfigError: see :func:`check_checkpoint`.
    """
    import torch

    from paperlab.instella.modeling import InstellaForCausalLM

    checked = check_checkpoint(path, allow_pickle=allow_pickle)
    config = parse_config(checked.config, checked.path / "config.json")
    if rope_theta is not None:
        if not rope_theta > 0:
            raise InstellaConfigError(f"rope_theta must be positive; got {rope_theta}")
        config.set_rope_theta(rope_theta)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device != "auto":
        try:
            torch.device(device)
        except (RuntimeError, ValueError):
            raise InstellaConfigError(f"unknown device {device!r}; give cpu, cuda, cuda:N or auto") from None
    kw: dict[str, Any] = {"dtype": torch_dtype(dtype) if dtype else "auto"}
    if not checked.safetensors:
        kw["use_safetensors"] = False
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet_transformers()
    model = InstellaForCausalLM.from_pretrained(checked.path, config=config, device_map=device, **kw)
    return model.eval()


def load_tokenizer_for(path: str | os.PathLike[str]) -> Any:
    """The tokenizer saved in ``path``, or the released one when the directory has none.

    Raises:
        CheckpointError: the tokenizer has more tokens than the model's vocabulary has rows
            (config.json's ``vocab_size``): its ids would index past the embedding. A directory
            without a tokenizer whose vocabulary is smaller than the released tokenizer's is
            the usual case (a model trained with its own tokenizer, saved without it).
    """
    p = Path(path)
    rows = read_config(p).get("vocab_size") if (p / "config.json").is_file() else None
    if (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(p)
        if not getattr(tok, "chat_template", None):
            from paperlab.instella.tokenizer import CHAT_TEMPLATE

            tok.chat_template = CHAT_TEMPLATE
        if isinstance(rows, int) and len(tok) > rows:
            raise CheckpointError(
                f"{p}: its tokenizer has {len(tok):,} tokens but the model's vocabulary only "
                f"{rows:,} rows; the tokenizer does not belong to these weights, save the right one there"
            )
        return tok
    from paperlab.instella.tokenizer import load_tokenizer

    tok = load_tokenizer()
    if isinstance(rows, int) and len(tok) > rows:
        raise CheckpointError(
            f"{p} has no tokenizer and its vocabulary of {rows:,} rows is too small for the "
            f"released Instella tokenizer ({len(tok):,} tokens); save the tokenizer the model was "
            "trained with into the directory (tokenizer.save_pretrained(DIR))"
        )
    return tok


def save_checkpoint(
    model: InstellaForCausalLM,
    out: str | os.PathLike[str],
    *,
    tokenizer: Any = None,
    max_shard_size: str | int = "2GB",
    force: bool = False,
    with_tokenizer: bool = True,
) -> Path:
    """Write ``model`` as a native Instella checkpoint with its tokenizer, atomically.

    The directory appears only when complete (built in a temporary sibling, then renamed).
    ``tokenizer`` defaults to the released one; ``with_tokenizer=False`` writes none.

    Raises:
        CheckpointError: ``out`` exists and ``force`` is false.
    """
    from paperlab.io.atomic import atomic_directory

    if tokenizer is None and with_tokenizer:
        from paperlab.instella.tokenizer import load_tokenizer

        tokenizer = load_tokenizer()
    _quiet_transformers()
    model.config.architectures = ["InstellaForCausalLM"]
    with atomic_directory(out, force=force, error=CheckpointError) as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        if with_tokenizer:
            tokenizer.save_pretrained(tmp)
    return Path(out).absolute()


def init_checkpoint(
    preset: str,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    dtype: str = "float32",
    max_shard_size: str | int = "2GB",
    force: bool = False,
) -> Path:
    """A randomly initialised checkpoint of a preset size, in the released layout."""
    import torch

    from paperlab.instella.configuration import preset_config
    from paperlab.instella.modeling import InstellaForCausalLM

    config = preset_config(preset)
    torch.manual_seed(seed)
    model = InstellaForCausalLM(config)
    model.to(torch_dtype(dtype))  # type: ignore[call-arg,arg-type]  # transformers wraps .to
    return save_checkpoint(model, out, max_shard_size=max_shard_size, force=force)


def convert_checkpoint(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    max_shard_size: str | int = "2GB",
    allow_pickle: bool = False,
    force: bool = False,
) -> Path:
    """Rewrite a remote-code (or pickle) checkpoint as a native one.

    Drops ``auto_map`` and the remote ``*.py`` files, sets ``architectures``, re-shards the
    weights as safetensors in their stored dtype, and keeps the tokenizer (or adds the released
    one when it fits the vocabulary; when it does not, the result has no tokenizer, as the
    source had none, and a warning says so).
    """
    src_p = Path(src).expanduser()
    if Path(out).absolute() == src_p.absolute():
        raise CheckpointError("convert writes a new directory; give an OUT different from DIR")
    check_checkpoint(src_p, allow_pickle=allow_pickle)
    try:
        tokenizer = load_tokenizer_for(src_p)
    except CheckpointError as exc:
        log.warning("converting without a tokenizer: %s", exc)
        tokenizer = None
    model = load_model(src_p, device="cpu", allow_pickle=allow_pickle)
    model.config.auto_map = None
    if hasattr(model.config, "auto_map"):
        del model.config.auto_map
    return save_checkpoint(model, out, tokenizer=tokenizer, max_shard_size=max_shard_size, force=force,
                           with_tokenizer=tokenizer is not None)
