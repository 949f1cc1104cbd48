"""Scenes of coloured shapes on a 4x4 grid: the objects, the renderer and the exact detector.

A scene is a few shapes, at most one per cell of a 4x4 grid of 8x8-pixel cells (a 32x32 RGB
image on black). Every (shape, size, colour) has exactly one rendering, so the detector can
match each cell against the 25 possible cell images (empty + 3 shapes x 2 sizes x 4 colours)
and pick the nearest: exact on rendered images, and robust to the blur and colour drift of a
VQ round trip because it only needs the right template to stay the nearest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CELL", "COLOURS", "GRID", "IMAGE_SIZE", "SHAPES", "SIZES", "Detection", "Obj", "Scene", "cell_templates",
           "cell_name", "detect", "parse_cell", "render", "render_batch"]

GRID = 4  # cells per side
CELL = 8  # pixels per cell side
IMAGE_SIZE = GRID * CELL
SIZES = ("small", "big")
SHAPES = ("square", "circle", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
PALETTE = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 235), "yellow": (235, 210, 40)}
# A cell whose best template is not at most half as far as the second best is "unclear".
CONFIDENT = 0.5


@dataclass(frozen=True, order=True)
class Obj:
    """One shape. Ordered by position (row, col) first so that a sorted scene reads in text order."""

    row: int
    col: int
    size: str
    colour: str
    shape: str

    @property
    def cell(self) -> str:
        return cell_name(self.row, self.col)

    def words(self) -> list[str]:
        return [self.size, self.colour, self.shape, self.cell]


Scene = tuple[Obj, ...]  # sorted, at most one object per cell


def cell_name(row: int, col: int) -> str:
    """Chess-like cell names: columns a-d left to right, rows 1-4 top to bottom."""
    return f"{'abcd'[col]}{row + 1}"


def parse_cell(name: str) -> tuple[int, int]:
    """Inverse of :func:`cell_name`; raises ValueError for anything else."""
    if len(name) != 2 or name[0] not in "abcd" or name[1] not in "1234":
        raise ValueError(f"not a cell: {name!r}")
    return int(name[1]) - 1, "abcd".index(name[0])


def _shape_mask(shape: str, size: str) -> np.ndarray:
    """The (CELL, CELL) boolean footprint of a shape inside its cell."""
    import numpy as np

    y, x = np.mgrid[0:CELL, 0:CELL].astype(float)
    c = (CELL - 1) / 2
    big = size == "big"
    if shape == "square":
        lo, hi = (1, 6) if big else (2, 5)
        return (y >= lo) & (y <= hi) & (x >= lo) & (x <= hi)
    if shape == "circle":
        r = 3.2 if big else 2.1
        return (y - c) ** 2 + (x - c) ** 2 <= r * r
    top, bottom = (1, 6) if big else (2, 5)
    return (y >= top) & (y <= bottom) & (np.abs(x - c) <= (y - top) * 0.5 + 0.5)


@lru_cache(maxsize=1)
def cell_templates() -> tuple[np.ndarray, tuple[tuple[str, str, str] | None, ...]]:
    """All 25 possible cell images as float (25, CELL*CELL*3) in [0, 1], and what each shows."""
    import numpy as np

    keys: list[tuple[str, str, str] | None] = [None]
    cells = [np.zeros((CELL, CELL, 3))]
    for shape in SHAPES:
        for size in SIZES:
            mask = _shape_mask(shape, size)
            for colour in COLOURS:
                img = np.zeros((CELL, CELL, 3))
                img[mask] = np.array(PALETTE[colour]) / 255.0
                cells.append(img)
                keys.append((size, colour, shape))
    return np.stack(cells).reshape(len(cells), -1), tuple(keys)


def render(scene: Scene) -> np.ndarray:
    """The (32, 32, 3) uint8 RGB image of a scene."""
    import numpy as np

    img = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for o in scene:
        mask = _shape_mask(o.shape, o.size)
        block = img[o.row * CELL:(o.row + 1) * CELL, o.col * CELL:(o.col + 1) * CELL]
        block[mask] = PALETTE[o.colour]
    return img


def render_batch(scenes: list[Scene]) -> np.ndarray:
    """(N, 32, 32, 3) uint8 images of many scenes."""
    import numpy as np

    return np.stack([render(s) for s in scenes]) if scenes else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)


@dataclass(frozen=True)
class Detection:
    """What the detector read from one image.

    ``confidence`` is the least confident cell: 1 - best/second-best template distance (1.0 for
    a clean render, near 0 when a cell sits between two templates). ``valid`` says every cell
    was read with confidence >= 0.5 and the image holds at least one shape.
    """

    scene: Scene
    confidence: float
    valid: bool


def detect(images: np.ndarray) -> list[Detection]:
    """Read the scene of each image by nearest cell template.

    Args:
        images: (N, 32, 32, 3) uint8 or float in [0, 1] (float is taken as already scaled).

    Returns:
        One :class:`Detection` per image.
    """
    import numpy as np

    imgs = np.asarray(images)
    if imgs.ndim == 3:
        imgs = imgs[None]
    x = imgs.astype(np.float64) / 255.0 if imgs.dtype == np.uint8 else imgs.astype(np.float64)
    n = x.shape[0]
    # (N, GRID, CELL, GRID, CELL, 3) -> (N, GRID*GRID, CELL*CELL*3), cells in reading order
    cells = x.reshape(n, GRID, CELL, GRID, CELL, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, GRID * GRID, -1)
    templ, keys = cell_templates()
    d = ((cells[:, :, None, :] - templ[None, None]) ** 2).mean(-1)  # (N, 16, 25)
    order = np.argsort(d, axis=-1)
    best = np.take_along_axis(d, order[..., :1], -1)[..., 0]
    second = np.take_along_axis(d, order[..., 1:2], -1)[..., 0]
    conf = 1.0 - best / np.maximum(second, 1e-12)
    out = []
    for i in range(n):
        objs = []
        for c in range(GRID * GRID):
            key = keys[int(order[i, c, 0])]
            if key is not None:
                objs.append(Obj(c // GRID, c % GRID, *key))
        cmin = float(conf[i].min())
        out.append(Detection(tuple(sorted(objs)), cmin, bool(cmin >= CONFIDENT and objs)))
    return out
