"""Image files in and out: checked PNG input, PNG output, trajectory strips and GIFs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from paperlab.io import atomic_write_bytes
from paperlab.paradiff.errors import ImageInputError
from paperlab.paradiff.scene import IMAGE_SIZE

if TYPE_CHECKING:
    import numpy as np

__all__ = ["load_image", "save_gif", "save_png", "save_strip"]


def load_image(path: Path) -> np.ndarray:
    """A (32, 32, 3) uint8 RGB array from an image file.

    Raises:
        ImageInputError: missing or unreadable file, wrong size, or a mode other than RGB.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode, size = im.mode, im.size
            arr = np.asarray(im)
    except FileNotFoundError:
        raise ImageInputError(f"input image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageInputError(f"input image {path} is not a readable image ({exc.__class__.__name__}); "
                              "give a 32x32 RGB PNG") from None
    if size != (IMAGE_SIZE, IMAGE_SIZE):
        raise ImageInputError(f"input image {path} is {size[0]}x{size[1]}; the model reads "
                              f"{IMAGE_SIZE}x{IMAGE_SIZE} RGB images (resize it, or render one with `paperlab paradiff sample`)")
    if mode != "RGB":
        raise ImageInputError(f"input image {path} has mode {mode}; the model reads RGB images "
                              "(convert it, e.g. PIL's Image.convert('RGB'))")
    return arr.copy()


def _png_bytes(img: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    im = Image.fromarray(img, "RGB")
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save_png(img: np.ndarray, path: Path, scale: int = 1) -> Path:
    """Write one (H, W, 3) uint8 image as PNG, atomically (``scale`` enlarges it, nearest pixel)."""
    return atomic_write_bytes(path, _png_bytes(img, scale))


def _frames(images: list[np.ndarray], texts: list[str], labels: list[str], scale: int) -> list:
    """One PIL frame per step: the image enlarged, the step label and the partial text under it."""
    import textwrap

    from PIL import Image, ImageDraw

    frames = []
    side = IMAGE_SIZE * scale
    for img, text, label in zip(images, texts, labels, strict=True):
        lines = textwrap.wrap(text, 26) or [""]
        canvas = Image.new("RGB", (side, side + 14 * (len(lines) + 1) + 6), (255, 255, 255))
        canvas.paste(Image.fromarray(img, "RGB").resize((side, side), Image.Resampling.NEAREST), (0, 0))
        draw = ImageDraw.Draw(canvas)
        draw.text((4, side + 2), label, fill=(120, 0, 0))
        for k, line in enumerate(lines):
            draw.text((4, side + 16 + 14 * k), line, fill=(0, 0, 0))
        frames.append(canvas)
    return frames


def save_gif(images: list[np.ndarray], texts: list[str], labels: list[str], path: Path, scale: int = 5,
             ms: int = 400) -> Path:
    """An animated GIF of a trajectory (one frame per step, the last one held)."""
    from PIL import Image

    frames = _frames(images, texts, labels, scale)
    h = max(f.height for f in frames)
    frames = [_pad(f, frames[0].width, h) for f in frames]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=[ms] * (len(frames) - 1) + [ms * 5], loop=0)
    del Image
    return atomic_write_bytes(path, buf.getvalue())


def _pad(frame, width: int, height: int):  # type: ignore[no-untyped-def]
    from PIL import Image

    out = Image.new("RGB", (width, height), (255, 255, 255))
    out.paste(frame, (0, 0))
    return out


def save_strip(images: list[np.ndarray], texts: list[str], labels: list[str], path: Path, scale: int = 4) -> Path:
    """All steps side by side in one PNG (image above, partial text below)."""
    from PIL import Image

    frames = _frames(images, texts, labels, scale)
    h = max(f.height for f in frames)
    strip = Image.new("RGB", (sum(f.width + 4 for f in frames), h), (255, 255, 255))
    x = 0
    for f in frames:
        strip.paste(f, (x, 0))
        x += f.width + 4
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
