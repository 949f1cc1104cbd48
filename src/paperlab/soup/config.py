"""Merge configs: one pydantic model (:class:`MergeSpec`) fed by a YAML file or by CLI flags.

The YAML may be written in mergekit's shape, so users can bring their configs:

    merge_method: linear            # linear | uniform | task_arithmetic | ties
    base_model: path/to/base        # task_arithmetic and ties
    models:
      - model: path/to/a
        parameters: {weight: 0.6}   # ties also accepts density here (one value for all models)
      - model: path/to/b
        parameters: {weight: 0.4}
    parameters: {normalize: true, lambda: 1.0, density: 0.5}
    dtype: bfloat16                 # output dtype (we always accumulate in float32)
    out_dtype: bfloat16             # wins over dtype when both are given
    tokenizer_source: base          # "base", or a model path: where config/tokenizer files come from
    paperlab: {shard_size: 2GB, check_finite: false, allow_pickle: false}

Every other key (mergekit's ``slices``, ``tokenizer``, ``chat_template``, ...) is refused with a
message that lists the honoured keys, rather than silently ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paperlab.soup.errors import MergeConfigError

TOP_KEYS = {"merge_method", "models", "base_model", "dtype", "out_dtype", "parameters", "tokenizer_source", "paperlab"}
MODEL_PARAM_KEYS = {"weight", "density"}
GLOBAL_PARAM_KEYS = {"normalize", "lambda", "density"}
PAPERLAB_KEYS = {"shard_size", "check_finite", "allow_pickle", "chunk_elements"}
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


class ModelEntry(BaseModel):
    """One input model and its weight (None for methods that take no weights)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    weight: float | None = None


class MergeSpec(BaseModel):
    """Everything a merge needs; the CLI flags and the YAML both build one of these."""

    model_config = ConfigDict(extra="forbid")
    method: str = "linear"
    models: list[ModelEntry] = Field(min_length=1)
    base_model: str | None = None
    dtype: str | None = None
    normalize: bool | None = None  # None: the method's default (linear: true, others: false)
    scale: float = 1.0
    density: float = Field(default=1.0, gt=0.0, le=1.0)
    source: str | None = None  # config/tokenizer source; default: the first model
    shard_size: int = 5 * 10**9
    check_finite: bool = False
    allow_pickle: bool = False
    chunk_elements: int = Field(default=4 * 2**20, gt=0)

    @property
    def weights(self) -> list[float] | None:
        ws = [m.weight for m in self.models]
        if all(w is None for w in ws):
            return None
        if any(w is None for w in ws):
            missing = [m.model for m in self.models if m.weight is None]
            raise MergeConfigError(f"model(s) without a weight: {', '.join(missing)}; give every model a weight")
        return [float(w) for w in ws if w is not None]


def _refuse_unknown(where: str, keys: set[str], allowed: set[str]) -> None:
    unknown = sorted(keys - allowed)
    if unknown:
        raise MergeConfigError(
            f"unsupported key(s) in {where}: {', '.join(unknown)}; honoured keys are {', '.join(sorted(allowed))}"
        )


def spec_from_mergekit(data: dict[str, Any]) -> MergeSpec:
    """Translate a mergekit-shaped mapping into a :class:`MergeSpec`.

    Raises:
        MergeConfigError: unknown keys, missing models, or invalid values.
    """
    if not isinstance(data, dict):
        raise MergeConfigError("a merge config must be a YAML mapping with merge_method and models")
    _refuse_unknown("the merge config", set(data), TOP_KEYS)
    models_raw = data.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise MergeConfigError("the merge config needs `models:`, a list of {model: PATH, parameters: {weight: W}}")
    models: list[dict[str, Any]] = []
    densities: set[float] = set()
    for i, entry in enumerate(models_raw):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise MergeConfigError(f"models[{i}] must be a mapping with a `model:` path")
        _refuse_unknown(f"models[{i}]", set(entry), {"model", "parameters"})
        params = entry.get("parameters") or {}
        _refuse_unknown(f"models[{i}].parameters", set(params), MODEL_PARAM_KEYS)
        if "density" in params:
            densities.add(float(params["density"]))
        models.append({"model": str(entry["model"]), "weight": params.get("weight")})
    glob = data.get("parameters") or {}
    _refuse_unknown("parameters", set(glob), GLOBAL_PARAM_KEYS)
    if "density" in glob:
        densities.add(float(glob["density"]))
    if len(densities) > 1:
        raise MergeConfigError(f"per-model densities differ ({sorted(densities)}); use one density for all models")
    extra = data.get("paperlab") or {}
    _refuse_unknown("paperlab", set(extra), PAPERLAB_KEYS)
    source = data.get("tokenizer_source")
    if source == "base":
        source = data.get("base_model")
        if source is None:
            raise MergeConfigError("tokenizer_source: base needs a base_model")
    elif source == "union":
        raise MergeConfigError("tokenizer_source: union is not supported; the models must share one tokenizer")
    fields: dict[str, Any] = {
        "method": data.get("merge_method", "linear"),
        "models": models,
        "base_model": data.get("base_model"),
        "dtype": data.get("out_dtype") or data.get("dtype"),
        "normalize": glob.get("normalize"),
        "scale": glob.get("lambda", 1.0),
        "density": densities.pop() if densities else 1.0,
        "source": source,
        **{k: v for k, v in extra.items() if k != "shard_size"},
    }
    if "shard_size" in extra:
        fields["shard_size"] = parse_size(extra["shard_size"])
    try:
        return MergeSpec(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise MergeConfigError(f"merge config field {loc}: {err['msg']}") from None


def load_merge_config(path: str | Path) -> MergeSpec:
    """Read a mergekit-shaped YAML merge config.

    Raises:
        MergeConfigError: the file is missing, not YAML, or not a valid merge config.
    """
    p = Path(path)
    if not p.is_file():
        raise MergeConfigError(f"merge config {p} does not exist; check the path")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise MergeConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    base = p.parent

    def resolve(m: str) -> str:
        # Relative model paths are relative to the config file, like mergekit's local paths.
        q = Path(m).expanduser()
        return str(q if q.is_absolute() or not (base / q).exists() else base / q)

    spec = spec_from_mergekit(data)
    spec.models = [ModelEntry(model=resolve(m.model), weight=m.weight) for m in spec.models]
    if spec.base_model:
        spec.base_model = resolve(spec.base_model)
    if spec.source:
        spec.source = resolve(spec.source)
    return spec
