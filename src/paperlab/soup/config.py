"""Merge configs: one pydantic model (:class:`MergeSpec`) fed by a YAML file or by CLI flags.

The YAML is mergekit's, as published, so users bring their configs unchanged:

    merge_method: ties              # any of the methods in docs/soup.md
    base_model: org/base            # a local directory or a Hub id (also allowed under models:)
    models:
      - model: org/a@v2             # a revision, and/or +org/adapter for a LoRA
        parameters:
          weight: 0.6               # a number,
          density: [1, 0.7, 0.1]    # a gradient over the layers,
      - model: path/to/b
        parameters:
          weight:                   # or a list of {filter, value}
            - {filter: mlp, value: 0.5}
            - value: 0.3
    parameters: {normalize: true, lambda: 1.0, int8_mask: true}
    dtype: float16                  # mergekit's compute dtype; we compute in float32 unless
                                    # --compute-dtype yaml, and write out_dtype, else this
    out_dtype: bfloat16
    tokenizer: {source: union, tokens: {...}, pad_to_multiple_of: 64}   # or tokenizer_source:
    chat_template: chatml           # auto, a built-in name, or a Jinja template
    paperlab: {shard_size: 2GB, check_finite: false, allow_pickle: false, seed: 0, compute_dtype: float32}

or, instead of ``models:``, ``slices:`` of ``sources: [{model, layer_range: [start, end]}]``.
The spec is validated once, here: every parameter against the method's declaration
(:class:`~paperlab.soup.methods.Param`), every dtype name, the tokenizer block. Nothing
downstream checks a value again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from paperlab.errors import config_error
from paperlab.soup.errors import MergeConfigError
from paperlab.soup.params import check_scope
from paperlab.soup.refs import parse_ref, relative_to

DtypeName = Literal["float32", "float16", "bfloat16", "float64"]
TOP_KEYS = {"merge_method", "models", "slices", "base_model", "dtype", "out_dtype", "parameters",
            "tokenizer_source", "tokenizer", "chat_template", "paperlab"}
REFUSED = {
    "modules": "`modules:` (multi-module models) is not supported; use models: or slices:",
    "out_path": "out_path (mergekit-multi) is not supported; give OUT_DIR on the command line, one config per file",
}
PAPERLAB_KEYS = {"shard_size", "check_finite", "allow_pickle", "chunk_elements", "seed", "compute_dtype", "device"}
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


def parse_kmb(value: str) -> int:
    """mergekit's ``--out-shard-size``: a count of bytes with an optional k, m or b suffix
    (thousands, millions, billions), e.g. ``5B`` = 5 * 10^9.

    Raises:
        MergeConfigError: not such a number.
    """
    m = re.fullmatch(r"\s*([0-9]+)\s*([kKmMbB]?)\s*", value)
    if not m or int(m.group(1)) <= 0:
        raise MergeConfigError(f"--out-shard-size {value!r} is not a size; write e.g. 5B, 500M or 1000000")
    return int(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}[m.group(2).lower()]


def _dtype_name(v: Any) -> Any:
    return v.removeprefix("torch.") if isinstance(v, str) else v


class ModelEntry(BaseModel):
    """One input model and its mergekit parameters; ``weight`` is shorthand for
    ``parameters: {weight: W}`` (it is folded in)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    weight: float | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fold_weight(self) -> ModelEntry:
        if self.weight is not None:
            self.parameters.setdefault("weight", self.weight)
            self.weight = None
        return self


class SliceSource(BaseModel):
    """One model's layer range within an output slice."""

    model_config = ConfigDict(extra="forbid")
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("layer_range")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= v[0] < v[1]:
            raise ValueError(f"layer_range must be [START, END] with 0 <= START < END, got {list(v)}")
        return v


class SliceSpec(BaseModel):
    """An output slice: its layers come from these sources' layer ranges, merged."""

    model_config = ConfigDict(extra="forbid")
    sources: list[SliceSource] = Field(min_length=1)
    base_model: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class TokenEmbedding(BaseModel):
    """Where one token's embedding comes from (mergekit's ``tokens:`` entries).

    ``source`` is a model reference (that model's embedding of the token), ``{kind: zero}``, or
    ``{kind: model_token, model: REF, token: TEXT}`` / ``token_id: N`` (another token's row).
    ``force`` uses it for every model, even those that have the token.
    """

    model_config = ConfigDict(extra="forbid")
    source: str | dict[str, Any] | None = None
    force: bool = False

    @field_validator("source")
    @classmethod
    def _source(cls, v: Any) -> Any:
        if isinstance(v, dict):
            kind = v.get("kind")
            if kind == "zero" and set(v) == {"kind"}:
                return v
            if kind == "model_token":
                if set(v) - {"kind", "model", "token", "token_id"} or "model" not in v:
                    raise ValueError("a model_token source takes model and one of token or token_id")
                if ("token" in v) == ("token_id" in v):
                    raise ValueError("a model_token source needs exactly one of token or token_id")
                return v
            raise ValueError("a token source is a model, {kind: zero} or {kind: model_token, model, token}")
        return v


class TokenizerSpec(BaseModel):
    """mergekit's ``tokenizer:`` block (``tokenizer_source: X`` is read as ``{source: X}``)."""

    model_config = ConfigDict(extra="forbid")
    source: str = "union"  # union | base | a model reference
    tokens: dict[str, TokenEmbedding] | None = None
    pad_to_multiple_of: int | None = Field(default=None, gt=0)


class MergeSpec(BaseModel):
    """Everything a merge needs; the CLI flags and the YAML both build one of these.

    Attributes (besides mergekit's own keys):
        compute_dtype: "float32" (the default: more accurate) or "yaml": compute in the YAML's
            ``dtype`` as mergekit does, which reproduces its bits.
        source: the model whose config.json and side files are copied (default: the base
            model, else the first model, as mergekit's donor).
        device: where arithmetic runs ("cpu", "cuda", "cuda:1").
        hf_cache: the Hugging Face cache directory for Hub ids (default: the library's).
        copy_tokenizer: copy the donor's tokenizer files (mergekit's --copy-tokenizer).
        allow_crimes: merge models of different architectures if their tensors line up.
    """

    model_config = ConfigDict(extra="forbid")
    method: str = "linear"
    models: list[ModelEntry] = Field(default_factory=list)
    slices: list[SliceSpec] | None = None
    base_model: str | None = None
    dtype: DtypeName | None = None
    out_dtype: DtypeName | None = None
    compute_dtype: Literal["float32", "yaml"] = "float32"
    parameters: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    tokenizer: TokenizerSpec | None = None
    chat_template: str | None = None
    copy_tokenizer: bool = True
    seed: int = 0
    shard_size: int = Field(default=5 * 10**9, gt=0)
    check_finite: bool = False
    allow_pickle: bool = False
    chunk_elements: int = Field(default=4 * 2**20, gt=0)
    device: str = "cpu"
    hf_cache: str | None = None
    allow_crimes: bool = False

    @field_validator("dtype", "out_dtype", mode="before")
    @classmethod
    def _dtypes(cls, v: Any) -> Any:
        return _dtype_name(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", v):
            raise ValueError(f"unknown device {v!r}; use cpu, cuda or cuda:N")
        return v

    @field_validator("chat_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        from paperlab.soup.chat_template import check_template

        return None if v is None else check_template(v)

    @model_validator(mode="after")
    def _check(self) -> MergeSpec:
        # The one place a merge's parameters and references are checked (see the module docstring).
        from paperlab.soup.methods import get_method

        method = get_method(self.method)
        check_scope(self.parameters, "parameters", method, per_model=False)
        for i, m in enumerate(self.models):
            parse_ref(m.model)
            check_scope(m.parameters, f"models[{i}].parameters", method, per_model=True)
        for i, sl in enumerate(self.slices or []):
            check_scope(sl.parameters, f"slices[{i}].parameters", method, per_model=False)
            for j, src in enumerate(sl.sources):
                parse_ref(src.model)
                check_scope(src.parameters, f"slices[{i}].sources[{j}].parameters", method, per_model=True)
        for ref in (self.base_model, self.source):
            if ref:
                parse_ref(ref)
        if self.models and self.slices:
            raise MergeConfigError("give either models: or slices:, not both")
        return self

    @property
    def compute(self) -> str | None:
        """The dtype to compute in when the YAML's is asked for (None: the inputs' promoted dtype)."""
        return "float32" if self.compute_dtype == "float32" else self.dtype

    @property
    def output_dtype(self) -> str | None:
        """What floating tensors are written as: out_dtype, else dtype, else the inputs' (None)."""
        return self.out_dtype or self.dtype


def _refuse_unknown(where: str, keys: set[str], allowed: set[str]) -> None:
    unknown = sorted(keys - allowed)
    if unknown:
        raise MergeConfigError(
            f"unsupported key(s) in {where}: {', '.join(unknown)}; honoured keys are {', '.join(sorted(allowed))}"
        )


def _model_entry(entry: Any, where: str) -> dict[str, Any]:
    if isinstance(entry, str):
        entry = {"model": entry}
    if not isinstance(entry, dict) or "model" not in entry:
        raise MergeConfigError(f"{where} must be a mapping with a `model:` path")
    _refuse_unknown(where, set(entry), {"model", "parameters"})
    params = entry.get("parameters") or {}
    if not isinstance(params, dict):
        raise MergeConfigError(f"{where}.parameters must be a mapping of parameter names to values")
    return {"model": str(entry["model"]), "parameters": params}


def _slice(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise MergeConfigError(f"{where} needs `sources:`, a list of {{model: PATH, layer_range: [START, END]}}")
    _refuse_unknown(where, set(raw), {"sources", "base_model", "parameters"})
    for j, src in enumerate(raw["sources"]):
        if not isinstance(src, dict) or "model" not in src or "layer_range" not in src:
            raise MergeConfigError(f"{where}.sources[{j}] needs `model:` and `layer_range: [START, END]`")
        _refuse_unknown(f"{where}.sources[{j}]", set(src), {"model", "layer_range", "parameters"})
    return {**raw, "parameters": raw.get("parameters") or {},
            "sources": [{**s, "model": str(s["model"]), "parameters": s.get("parameters") or {}} for s in raw["sources"]]}


def spec_from_mergekit(data: dict[str, Any], **overrides: Any) -> MergeSpec:
    """Translate a mergekit-shaped mapping into a :class:`MergeSpec` (``overrides``: fields set
    by command-line flags).

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
    if "merge_method" not in data:
        raise MergeConfigError("the merge config needs `merge_method:` (linear, ties, slerp, ...)")
    fields: dict[str, Any] = {}
    if slices_raw:
        if not isinstance(slices_raw, list):
            raise MergeConfigError("slices: must be a list of {sources: [...]}")
        fields["slices"] = [_slice(s, f"slices[{i}]") for i, s in enumerate(slices_raw)]
    else:
        if not isinstance(models_raw, list) or not models_raw:
            raise MergeConfigError("the merge config needs `models:`, a list of {model: PATH, parameters: {weight: W}}")
        fields["models"] = [_model_entry(e, f"models[{i}]") for i, e in enumerate(models_raw)]
    if data.get("tokenizer") is not None and data.get("tokenizer_source") is not None:
        raise MergeConfigError("give either tokenizer: or tokenizer_source:, not both (mergekit refuses both too)")
    tok = data.get("tokenizer")
    if data.get("tokenizer_source") is not None:
        tok = {"source": str(data["tokenizer_source"])}
    extra = data.get("paperlab") or {}
    if not isinstance(extra, dict):
        raise MergeConfigError("paperlab: must be a mapping")
    _refuse_unknown("paperlab", set(extra), PAPERLAB_KEYS)
    fields.update({
        "method": data["merge_method"],
        "base_model": None if data.get("base_model") is None else str(data["base_model"]),
        "dtype": data.get("dtype"),
        "out_dtype": data.get("out_dtype"),
        "parameters": data.get("parameters") or {},
        "tokenizer": tok,
        "chat_template": data.get("chat_template"),
        **{k: v for k, v in extra.items() if k != "shard_size"},
    })
    if "shard_size" in extra:
        fields["shard_size"] = parse_size(extra["shard_size"])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return MergeSpec(**fields)
    except ValidationError as exc:
        raise config_error(exc, "merge config", MergeConfigError) from None


def load_merge_config(path: str | Path, **overrides: Any) -> MergeSpec:
    """Read a mergekit-shaped YAML merge config (local model paths relative to the file).

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
                               "(split a mergekit-multi file into one file per merge)")
    spec = spec_from_mergekit(docs[0], **overrides)
    base = p.parent
    for entry in spec.models:
        entry.model = relative_to(entry.model, base)
    for sl in spec.slices or []:
        for src in sl.sources:
            src.model = relative_to(src.model, base)
        if sl.base_model:
            sl.base_model = relative_to(sl.base_model, base)
    if spec.base_model:
        spec.base_model = relative_to(spec.base_model, base)
    if spec.tokenizer and spec.tokenizer.source not in ("union", "base"):
        spec.tokenizer.source = relative_to(spec.tokenizer.source, base)
    for tok in (spec.tokenizer.tokens or {}).values() if spec.tokenizer else ():
        if isinstance(tok.source, str):
            tok.source = relative_to(tok.source, base)
        elif isinstance(tok.source, dict) and "model" in tok.source:
            tok.source["model"] = relative_to(str(tok.source["model"]), base)
    return spec
