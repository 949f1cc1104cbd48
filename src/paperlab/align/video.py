"""Procedural short videos with templated captions drawn from the same latent facts.

Each clip has four latent facts: colour, shape, size and motion direction. The frames show that
object moving in that direction over a cluttered, per-frame-random background (a few grey
distractor shapes and a random background tint), so one frame is a noisy view and more frames
average the noise away and reveal the motion. Each caption states a random subset of the facts
with random synonyms and templates, so one caption is a partial view and more captions describe
the clip more completely. Everything is seeded: the same spec gives the same pixels and text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from paperlab.errors import AlignError

COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((220, 30, 30), ("red", "crimson", "scarlet")),
    "green": ((30, 170, 50), ("green", "emerald", "lime-green")),
    "blue": ((30, 60, 220), ("blue", "navy", "cobalt")),
    "yellow": ((240, 210, 20), ("yellow", "golden", "lemon-coloured")),
    "purple": ((140, 40, 180), ("purple", "violet", "magenta")),
    "orange": ((250, 130, 10), ("orange", "amber", "tangerine")),
}
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "ball", "round blob"),
    "square": ("square", "box", "block", "cube"),
    "triangle": ("triangle", "wedge", "three-sided shape"),
    "diamond": ("diamond", "rhombus", "lozenge"),
}
SIZES: dict[str, tuple[float, tuple[str, ...]]] = {
    "small": (0.10, ("small", "tiny", "little")),
    "large": (0.22, ("large", "big", "huge")),
}
DIRECTIONS: dict[str, tuple[tuple[float, float], tuple[str, ...]]] = {
    "left": ((-1.0, 0.0), ("to the left", "leftwards", "towards the left edge")),
    "right": ((1.0, 0.0), ("to the right", "rightwards", "towards the right edge")),
    "up": ((0.0, -1.0), ("upwards", "towards the top", "up the screen")),
    "down": ((0.0, 1.0), ("downwards", "towards the bottom", "down the screen")),
}
FACTS = ("colour", "shape", "size", "direction")


@dataclass(frozen=True)
class ClipSpec:
    """How many clips, frames and captions to make, at what resolution, from which seed."""

    n_items: int = 160
    n_frames: int = 8
    n_captions: int = 8
    size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_items < 12 or self.n_frames < 1 or self.n_captions < 1 or self.size < 32:
            raise AlignError(
                "clip spec needs n_items >= 12, n_frames >= 1, n_captions >= 1 and size >= 32"
            )


@dataclass
class Clip:
    """One procedural video: its latent facts, frames (F, H, W, 3) uint8, and captions."""

    facts: dict[str, str]
    frames: np.ndarray
    captions: list[str]


def sample_facts(rng: np.random.Generator) -> dict[str, str]:
    """One random assignment of the four latent facts."""
    return {
        "colour": str(rng.choice(list(COLOURS))),
        "shape": str(rng.choice(list(SHAPES))),
        "size": str(rng.choice(list(SIZES))),
        "direction": str(rng.choice(list(DIRECTIONS))),
    }


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]  # diamond


def _draw(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, ...]
) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=fill)


def render_frames(
    facts: dict[str, str], n_frames: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of the object crossing the view in its direction, with clutter."""
    r = SIZES[facts["size"]][0] * size
    (dx, dy), _ = DIRECTIONS[facts["direction"]]
    travel = 0.5 * size
    # start so that the whole path stays inside the frame
    cx0 = rng.uniform(r, size - r) if dx == 0 else (size / 2 - dx * travel / 2)
    cy0 = rng.uniform(r, size - r) if dy == 0 else (size / 2 - dy * travel / 2)
    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    for t in range(n_frames):
        tint = tuple(int(v) for v in rng.integers(150, 256, size=3))
        img = Image.new("RGB", (size, size), tint)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 5))):  # distractors: grey, random shape and place
            g = int(rng.integers(60, 140))
            cx, cy = (float(v) for v in rng.uniform(0, size, 2))
            _draw(
                draw,
                str(rng.choice(list(SHAPES))),
                cx,
                cy,
                rng.uniform(0.05, 0.15) * size,
                (g, g, g),
            )
        frac = t / max(1, n_frames - 1)
        _draw(
            draw,
            facts["shape"],
            cx0 + dx * travel * frac,
            cy0 + dy * travel * frac,
            r,
            COLOURS[facts["colour"]][0],
        )
        frames[t] = np.asarray(img)
    return frames


_TEMPLATES = (
    "A {size} {colour} {shape} moves {direction}.",
    "There is a {size} {colour} {shape} going {direction}.",
    "This clip shows a {size} {colour} {shape} heading {direction}.",
    "In the video a {size} {colour} {shape} drifts {direction}.",
)


def caption(facts: dict[str, str], rng: np.random.Generator, p_mention: float = 0.6) -> str:
    """One caption stating a random non-empty subset of the facts, with random wording."""
    keep = rng.random(len(FACTS)) < p_mention
    if not keep.any():
        keep[rng.integers(len(FACTS))] = True
    said = dict(zip(FACTS, keep, strict=True))
    words = {
        "colour": str(rng.choice(COLOURS[facts["colour"]][1])) if said["colour"] else "",
        "size": str(rng.choice(SIZES[facts["size"]][1])) if said["size"] else "",
        "shape": str(rng.choice(SHAPES[facts["shape"]])) if said["shape"] else "shape",
        "direction": str(rng.choice(DIRECTIONS[facts["direction"]][1]))
        if said["direction"]
        else "around",
    }
    text = str(rng.choice(_TEMPLATES)).format(**words)
    return " ".join(text.split())  # drop the gaps left by unsaid adjectives


def make_clips(spec: ClipSpec, batch: int = 16) -> Iterator[list[Clip]]:
    """Yield the spec's clips in batches (so pixels for all clips are never held at once)."""
    rng = np.random.default_rng(spec.seed)
    out: list[Clip] = []
    for _ in range(spec.n_items):
        facts = sample_facts(rng)
        frames = render_frames(facts, spec.n_frames, spec.size, rng)
        caps = [caption(facts, rng) for _ in range(spec.n_captions)]
        out.append(Clip(facts, frames, caps))
        if len(out) == batch:
            yield out
            out = []
    if out:
        yield out
