"""Merge configs: one pydantic model (:class:`MergeSpec`) fed by a YAML file or by CLI flags.

The YAML is mergekit's, as published, so users can bring their configs unchanged but for the
model paths:

    merge_method: ties              # see docs/soup.md for every method and its parameters
    base_model: path/to/base        # also allowed under models: (its parameters are ignored)
    models:
      - model: path/to/a
        parameters:
          weight: 0.6               # a number,
          density: [1, 0.7, 0.1]    # a gradient over the layers,
      - model: path/to/b
        parameters:
          weight:                   # or a list of {filter, value}
            - {filter: mlp, value: 0.5}
            - value: 0.3
    parameters: {normalize: true, lambda: 1.0, int8_mask: true}
    dtype: float32                  # mergekit's compute dtype: we always compute in float32
    out_dtype: bfloat16             # the output dtype (else `dtype`, else the inputs')
    tokenizer_source: base          # base | union | a model path: where tokenizer files come from
    paperlab: {shard_size: 2GB, check_finite: false, allow_pickle: false, seed: 0}

or, instead of ``models:``, ``slices:`` of ``sources: [{model, layer_range: [start, end]}]``
(with ``passthrough`` to stack layers of different models). Keys mergekit has that we cannot
honour (``tokenizer:``, ``chat_template:``, ``modules:``) are refused with the reason.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from paperlab.errors import config_error
from paperlab.soup.errors import MergeConfigError
from paperlab.soup.params import check_setting

TOP_KEYS = {"merge_method", "models", "slices", "base_model", "dtype", "out_dtype", "parameters",
            "tokenizer_source", "paperlab"}
REFUSED = {
    "tokenizer": "the `tokenizer:` block (vocabulary surgery) is not supported; use tokenizer_source: base",
    "chat_template": "chat_template is not supported; copy the template into the output's tokenizer_config.json",
    "modules": "`modules:` (multi-module models) is not supported; use models: or slices:",
    "out_path": "out_path (mergekit-mega) is not supported; give OUT_DIR on the command line, one config per file",
}
PAPERLAB_KEYS = {"shard_size", "check_finite", "allow_pickle", "chunk_elements", "seed"}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(value: str | int) -> int:
    """``"2GB"``, ``"500MiB"`` or ``1000000`` -> bytes.

    Raises:
        MergeConfigError: not a positive size.
    """
    if isinstance(value, int):
        n = value
    else:
        m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(value))
        if not m or m.group(2).upper() not in _UNITS:
            raise MergeConfigError(f"shard size {value!r} is not a size; write e.g. 2GB, 500MiB or 1000000")
        n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n <= 0:
        raise MergeConfigError(f"shard size must be positive, got {value!r}")
    return n


def _finite(v: float | None, what: str) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v}")
    return v


class ModelEntry(BaseModel):
    """One input model, its weight (flags) and its mergekit parameters (YAML)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    weight: float | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("weight")
    @classmethod
    def _weight_finite(cls, v: float | None) -> float | None:
        return _finite(v, "weight")


class SliceSource(BaseModel):
    """One model's layer range within an output slice."""

    model_config = ConfigDict(extra="forbid")
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] = Field(default_factory=dict)


class SliceSpec(BaseModel):
    """An output slice: its layers come from these sources' layer ranges, merged."""

    model_config = ConfigDict(extra="forbid")
    sources: list[SliceSource] = Field(min_length=1)
    base_model: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class MergeSpec(BaseModel):
    """Everything a merge needs; the CLI flags and the YAML both build one of these.

    ``normalize``, ``scale`` (lambda) and ``density`` are the flag route's shortcuts for the
    top-level parameters; None means "not given" (the method's default applies).
    """

    model_config = ConfigDict(extra="forbid")
    method: str = "linear"
    models: list[ModelEntry] = Field(default_factory=list)
    slices: list[SliceSpec] | None = None
    base_model: str | None = None
    dtype: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    normalize: bool | None = None
    scale: float | None = None
    density: float | None = Field(default=None, gt=0.0, le=1.0)
    gamma: float | None = Field(default=None, ge=0.0)
    epsilon: float | None = Field(default=None, ge=0.0)
    t: float | None = Field(default=None, ge=0.0, le=1.0)
    source: str | None = None  # config/tokenizer source; default: the first model
    tokenizer_union: bool = False
    seed: int = 0
    shard_size: int = Field(default=5 * 10**9, gt=0)
    check_finite: bool = False
    allow_pickle: bool = False
    chunk_elements: int = Field(default=4 * 2**20, gt=0)

    @field_validator("scale")
    @classmethod
    def _scale_finite(cls, v: float | None) -> float | None:
        return _finite(v, "lambda")

    @field_validator("density", "gamma", "epsilon", "t")
    @classmethod
    def _not_nan(cls, v: float | None) -> float | None:
        return _finite(v, "value")

    @property
    def weights(self) -> list[float] | None:
        """One scalar weight per model, when every model has one (None when none has)."""
        ws = [m.weight if m.weight is not None else m.parameters.get("weight", self.parameters.get("weight"))
              for m in self.models]
        if all(w is None for w in ws):
            return None
        if not all(isinstance(w, (int, float)) for w in ws):
            if any(w is None for w in ws):
                missing = [m.model for m, w in zip(self.models, ws, strict=True) if w is None]
                raise MergeConfigError(f"model(s) without a weight: {', '.join(missing)}; give every model a weight")
            return None  # per-layer or filtered weights: resolved per tensor
        return [float(w) for w in ws if isinstance(w, (int, float))]

    def shared_scope(self) -> dict[str, Any]:
        """The top-level parameters, with the flag shortcuts filled in where the YAML is silent."""
        scope = dict(self.parameters)
        for key, value in (("normalize", self.normalize), ("lambda", self.scale), ("density", self.density),
                           ("gamma", self.gamma), ("epsilon", self.epsilon), ("t", self.t)):
            if value is not None:
                scope.setdefault(key, value)
        return scope


def _refuse_unknown(where: str, keys: set[str], allowed: set[str]) -> None:
    unknown = sorted(keys - allowed)
    if unknown:
        raise MergeConfigError(
            f"unsupported key(s) in {where}: {', '.join(unknown)}; honoured keys are {', '.join(sorted(allowed))}"
        )


def _params(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MergeConfigError(f"{where} must be a mapping of parameter names to values")
    for k, v in raw.items():
        check_setting(str(k), v, where)
    return {str(k): v for k, v in raw.items()}


def _model_entry(entry: Any, where: str) -> dict[str, Any]:
    if isinstance(entry, str):
        entry = {"model": entry}
    if not isinstance(entry, dict) or "model" not in entry:
        raise MergeConfigError(f"{where} must be a mapping with a `model:` path")
    _refuse_unknown(where, set(entry), {"model", "parameters"})
    return {"model": str(entry["model"]), "parameters": _params(entry.get("parameters"), f"{where}.parameters")}


def _slice(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise MergeConfigError(f"{where} needs `sources:`, a list of {{model: PATH, layer_range: [START, END]}}")
    _refuse_unknown(where, set(raw), {"sources", "base_model", "parameters"})
    sources = []
    for j, src in enumerate(raw["sources"]):
        w = f"{where}.sources[{j}]"
        if not isinstance(src, dict) or "model" not in src or "layer_range" not in src:
            raise MergeConfigError(f"{w} needs `model:` and `layer_range: [START, END]`")
        _refuse_unknown(w, set(src), {"model", "layer_range", "parameters"})
        lr = src["layer_range"]
        if (not isinstance(lr, list) or len(lr) != 2 or not all(isinstance(x, int) for x in lr)
                or not 0 <= lr[0] < lr[1]):
            raise MergeConfigError(f"{w}.layer_range must be [START, END] with 0 <= START < END, got {lr!r}")
        sources.append({"model": str(src["model"]), "layer_range": tuple(lr),
                        "parameters": _params(src.get("parameters"), f"{w}.parameters")})
    return {"sources": sources, "base_model": raw.get("base_model"),
            "parameters": _params(raw.get("parameters"), f"{where}.parameters")}


def spec_from_mergekit(data: dict[str, Any]) -> MergeSpec:
    """Translate a mergekit-shaped mapping into a :class:`MergeSpec`.

    Raises:
        MergeConfigError: unknown keys, missing models, or invalid values.
    """
    if not isinstance(data, dict):
        raise MergeConfigError("a merge config must be a YAML mapping with merge_method and models")
    for key, why in REFUSED.items():
        if key in data:
            raise MergeConfigError(why)
    _refuse_unknown("the merge config", set(data), TOP_KEYS)
    models_raw, slices_raw = data.get("models"), data.get("slices")
    if models_raw and slices_raw:
        raise MergeConfigError("give either models: or slices:, not both")
    if slices_raw:
        if not isinstance(slices_raw, list):
            raise MergeConfigError("slices: must be a list of {sources: [...]}")
        slices = [_slice(s, f"slices[{i}]") for i, s in enumerate(slices_raw)]
        models: list[dict[str, Any]] = []
    else:
        if not isinstance(models_raw, list) or not models_raw:
            raise MergeConfigError("the merge config needs `models:`, a list of {model: PATH, parameters: {weight: W}}")
        models = [_model_entry(e, f"models[{i}]") for i, e in enumerate(models_raw)]
        slices = None
    extra = data.get("paperlab") or {}
    _refuse_unknown("paperlab", set(extra), PAPERLAB_KEYS)
    source = data.get("tokenizer_source")
    union = False
    if source == "base":
        source = data.get("base_model")
        if source is None:
            raise MergeConfigError("tokenizer_source: base needs a base_model")
    elif source == "union":
        source, union = None, True
    fields: dict[str, Any] = {
        "method": data.get("merge_method", "linear"),
        "models": models,
        "slices": slices,
        "base_model": data.get("base_model"),
        # mergekit's `dtype` is its compute dtype; we compute in float32 and write out_dtype,
        # else `dtype` (which is what mergekit writes when out_dtype is absent).
        "dtype": data.get("out_dtype") or data.get("dtype"),
        "parameters": _params(data.get("parameters"), "parameters"),
        "source": source,
        "tokenizer_union": union,
        **{k: v for k, v in extra.items() if k != "shard_size"},
    }
    if "shard_size" in extra:
        fields["shard_size"] = parse_size(extra["shard_size"])
    try:
        return MergeSpec(**fields)
    except ValidationError as exc:
        raise config_error(exc, "merge config", MergeConfigError) from None


def load_merge_config(path: str | Path) -> MergeSpec:
    """Read a mergekit-shaped YAML merge config.

    Raises:
        MergeConfigError: the file is missing, not YAML, or not a valid merge config.
    """
    p = Path(path)
    if not p.is_file():
        raise MergeConfigError(f"merge config {p} does not exist; check the path")
    try:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise MergeConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if len(docs) != 1:
        raise MergeConfigError(f"{p}: holds {len(docs)} YAML documents; a merge config is one document "
                               "(split a mergekit-mega file into one file per merge)")
    base = p.parent

    def resolve(m: str) -> str:
        # Relative model paths are relative to the config file, like mergekit's local paths.
        q = Path(m).expanduser()
        return str(q if q.is_absolute() or not (base / q).exists() else base / q)

    spec = spec_from_mergekit(docs[0])
    for entry in spec.models:
        entry.model = resolve(entry.model)
    for sl in spec.slices or []:
        for src in sl.sources:
            src.model = resolve(src.model)
        if sl.base_model:
            sl.base_model = resolve(sl.base_model)
    if spec.base_model:
        spec.base_model = resolve(spec.base_model)
    if spec.source:
        spec.source = resolve(spec.source)
    return spec
