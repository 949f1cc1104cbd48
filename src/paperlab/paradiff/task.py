"""The thinking-aware task: prompts, the reasoning grammar, and the word vocabulary.

Two kinds of examples, each with an exact answer:

- editing (an input scene + an instruction that names shapes indirectly: "recolour the circle to
  the colour of the red shape", "move the shape at b2 left", "swap the colours of ..."),
- generation (a description whose later shapes refer to earlier ones: "draw a big red circle at
  b2 and a small square at c1 with the colour of the circle").

The reasoning text the model must write is the resolved output scene in a fixed grammar,
``size colour shape cell ; size colour shape cell ; ...`` in reading order, so
:func:`parse_text` turns any text back into a scene (or says it does not parse) and the
benchmark can compare text and image exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from paperlab.paradiff.errors import PromptError
from paperlab.paradiff.scene import COLOURS, GRID, SHAPES, SIZES, Obj, Scene, cell_name, parse_cell

__all__ = ["MAX_OBJECTS", "PROMPT_LEN", "SPECIALS", "TEXT_LEN", "WORDS", "Example", "GrammarError",
           "check_prompt", "make_example", "make_examples", "parse_text", "scene_text"]

MAX_OBJECTS = 3
PROMPT_LEN = 34  # longest prompt the generator makes is 33 words
TEXT_LEN = 16  # 3 objects x 4 words + 2 separators + <eos>, padded
SPECIALS = ("<pad>", "<mask>", "<boi>", "<eoi>", "<eos>", "<noimg>")
RELATIONS = {"left-of": (0, -1), "right-of": (0, 1), "above": (-1, 0), "below": (1, 0)}
MOVES = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
CELLS = tuple(cell_name(r, c) for r in range(GRID) for c in range(GRID))
WORDS: tuple[str, ...] = (
    *SPECIALS, ";", "draw", "a", "the", "at", "and", "with", "colour", "colours", "of", "shape",
    "to", "recolour", "move", "remove", "make", "swap", *RELATIONS, *MOVES, *SIZES, *COLOURS,
    *SHAPES, *CELLS,
)


class GrammarError(ValueError):
    """A reasoning text that does not follow the scene grammar (scored as bad text quality)."""


@dataclass(frozen=True)
class Example:
    """One task instance.

    ``untouched`` are the input objects the instruction leaves alone (image consistency checks
    that they survive unchanged); empty for generation.
    """

    kind: str  # "edit" or "generate"
    prompt: tuple[str, ...]
    input_scene: Scene | None
    target: Scene
    untouched: Scene = field(default=())

    @property
    def key(self) -> tuple[tuple[str, ...], Scene | None]:
        return self.prompt, self.input_scene


def scene_text(scene: Scene) -> list[str]:
    """The reasoning words of a scene (without ``<eos>``)."""
    words: list[str] = []
    for i, o in enumerate(sorted(scene)):
        if i:
            words.append(";")
        words += o.words()
    return words


def parse_text(words: list[str]) -> Scene:
    """Parse reasoning words (stopping at ``<eos>``/``<pad>``) back into a scene.

    Raises:
        GrammarError: a group is not ``size colour shape cell``, two shapes share a cell, the
            objects are not in reading order, or there are none / too many.
    """
    body: list[str] = []
    for w in words:
        if w in ("<eos>", "<pad>"):
            break
        body.append(w)
    groups: list[list[str]] = [[]]
    for w in body:
        if w == ";":
            groups.append([])
        else:
            groups[-1].append(w)
    objs: list[Obj] = []
    for g in groups:
        if len(g) != 4 or g[0] not in SIZES or g[1] not in COLOURS or g[2] not in SHAPES:
            raise GrammarError(f"bad object {' '.join(g)!r}")
        try:
            row, col = parse_cell(g[3])
        except ValueError as exc:
            raise GrammarError(str(exc)) from None
        objs.append(Obj(row, col, g[0], g[1], g[2]))
    if not 1 <= len(objs) <= MAX_OBJECTS:
        raise GrammarError(f"{len(objs)} objects")
    if len({(o.row, o.col) for o in objs}) != len(objs):
        raise GrammarError("two objects in one cell")
    if objs != sorted(objs):
        raise GrammarError("objects out of reading order")
    return tuple(objs)


def check_prompt(prompt: str) -> list[str]:
    """Split a user prompt into words and check them against the vocabulary.

    Raises:
        PromptError: unknown words (named, with the vocabulary hint) or too many words.
    """
    words = prompt.replace(",", " ").split()
    if not words:
        raise PromptError("the prompt is empty; try e.g. 'draw a big red circle at b2 and a small blue square at c3'")
    specials = set(SPECIALS)
    unknown = [w for w in words if w not in WORDS or w in specials]
    if unknown:
        raise PromptError(f"unknown word(s) in the prompt: {', '.join(sorted(set(unknown)))}; the task "
                          "vocabulary is listed by `paperlab paradiff vocab`")
    if len(words) > PROMPT_LEN:
        raise PromptError(f"the prompt has {len(words)} words; at most {PROMPT_LEN} fit the model")
    return words


# --- generation of examples -------------------------------------------------------------------


def _random_obj(rng: random.Random, free: list[tuple[int, int]]) -> Obj:
    r, c = rng.choice(free)
    return Obj(r, c, rng.choice(SIZES), rng.choice(COLOURS), rng.choice(SHAPES))


def _refs(obj: Obj, among: Scene) -> list[list[str]]:
    """Every unambiguous way to name ``obj`` among ``among``: by shape, by colour, by cell."""
    out = []
    if sum(o.shape == obj.shape for o in among) == 1:
        out.append(["the", obj.shape])
    if sum(o.colour == obj.colour for o in among) == 1:
        out.append(["the", obj.colour, "shape"])
    return out


def _ref(rng: random.Random, obj: Obj, among: Scene) -> list[str]:
    """An unambiguous name; indirect ones (shape or colour) are preferred, the cell is the fallback."""
    options = _refs(obj, among)
    if not options or rng.random() < 0.15:
        return ["the", "shape", "at", obj.cell]
    return rng.choice(options)


def _free(scene: Scene) -> list[tuple[int, int]]:
    taken = {(o.row, o.col) for o in scene}
    return [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in taken]


def _replace(scene: Scene, old: Obj, new: Obj) -> Scene:
    return tuple(sorted(new if o == old else o for o in scene))


def _edit(rng: random.Random, scene: Scene) -> Example | None:
    """One random edit of ``scene``, or None when the drawn edit does not apply to it."""
    op = rng.choice(("recolour", "recolour-copy", "move", "remove", "resize", "swap"))
    o = rng.choice(scene)
    others = [p for p in scene if p != o]
    if op == "recolour":
        colour = rng.choice([c for c in COLOURS if c != o.colour])
        new = Obj(o.row, o.col, o.size, colour, o.shape)
        words, changed, target = ["recolour", *_ref(rng, o, scene), "to", colour], [o], _replace(scene, o, new)
    elif op == "recolour-copy":
        donors = [p for p in others if p.colour != o.colour]
        if not donors:
            return None
        p = rng.choice(donors)
        new = Obj(o.row, o.col, o.size, p.colour, o.shape)
        words = ["recolour", *_ref(rng, o, scene), "to", "the", "colour", "of", *_ref(rng, p, scene)]
        changed, target = [o], _replace(scene, o, new)
    elif op == "move":
        free = set(_free(scene))
        moves = [m for m, (dr, dc) in MOVES.items() if (o.row + dr, o.col + dc) in free]
        if not moves:
            return None
        m = rng.choice(moves)
        dr, dc = MOVES[m]
        new = Obj(o.row + dr, o.col + dc, o.size, o.colour, o.shape)
        words, changed, target = ["move", *_ref(rng, o, scene), m], [o], _replace(scene, o, new)
    elif op == "remove":
        words, changed, target = ["remove", *_ref(rng, o, scene)], [o], tuple(others)
    elif op == "resize":
        size = "small" if o.size == "big" else "big"
        new = Obj(o.row, o.col, size, o.colour, o.shape)
        words, changed, target = ["make", *_ref(rng, o, scene), size], [o], _replace(scene, o, new)
    else:  # swap the colours of two shapes
        partners = [p for p in others if p.colour != o.colour]
        if not partners:
            return None
        p = rng.choice(partners)
        o2, p2 = Obj(o.row, o.col, o.size, p.colour, o.shape), Obj(p.row, p.col, p.size, o.colour, p.shape)
        words = ["swap", "the", "colours", "of", *_ref(rng, o, scene), "and", *_ref(rng, p, scene)]
        changed, target = [o, p], _replace(_replace(scene, o, o2), p, p2)
    untouched = tuple(q for q in scene if q not in changed)
    return Example("edit", tuple(words), scene, target, untouched)


def _generation(rng: random.Random) -> Example:
    """A scene described shape by shape; later shapes may be placed or coloured by earlier ones."""
    n = rng.randint(2, MAX_OBJECTS)
    objs: list[Obj] = []
    words = ["draw"]
    for i in range(n):
        done = tuple(objs)
        mode = "absolute" if i == 0 else rng.choice(("absolute", "relative", "relative", "colour"))
        obj = _random_obj(rng, _free(done))
        phrase = ["a", obj.size, obj.colour, obj.shape, "at", obj.cell]
        if mode == "relative":
            options = []
            for p in done:
                for rel, (dr, dc) in RELATIONS.items():
                    cell = (p.row + dr, p.col + dc)
                    if cell in _free(done) and _refs(p, done):
                        options.append((p, rel, cell))
            if options:
                p, rel, (r, c) = rng.choice(options)
                obj = Obj(r, c, obj.size, obj.colour, obj.shape)
                phrase = ["a", obj.size, obj.colour, obj.shape, rel, *rng.choice(_refs(p, done))]
        elif mode == "colour":
            donors = [p for p in done if _refs(p, done)]
            if donors:
                p = rng.choice(donors)
                obj = Obj(obj.row, obj.col, obj.size, p.colour, obj.shape)
                phrase = ["a", obj.size, obj.shape, "at", obj.cell, "with", "the", "colour", "of",
                          *rng.choice(_refs(p, done))]
        if i:
            words.append("and")
        words += phrase
        objs.append(obj)
    return Example("generate", tuple(words), None, tuple(sorted(objs)))


def make_example(rng: random.Random, p_edit: float = 2 / 3) -> Example:
    """One random example: an edit with probability ``p_edit``, else a generation."""
    if rng.random() >= p_edit:
        return _generation(rng)
    while True:
        scene: list[Obj] = []
        for _ in range(rng.randint(2, MAX_OBJECTS)):
            scene.append(_random_obj(rng, _free(tuple(scene))))
        ex = _edit(rng, tuple(sorted(scene)))
        if ex is not None:
            return ex


def make_examples(n: int, seed: int, *, n_edit: int | None = None,
                  exclude: set[tuple[tuple[str, ...], Scene | None]] | None = None) -> list[Example]:
    """``n`` distinct examples from ``seed``; exactly ``n_edit`` edits when given (the rest generation).

    ``exclude`` holds keys (prompt, input scene) that must not appear, e.g. the benchmark's.
    """
    rng = random.Random(seed)
    seen = set(exclude or ())
    out: list[Example] = []
    want_edit = n_edit if n_edit is not None else -1
    n_e = n_g = 0
    while len(out) < n:
        if want_edit >= 0:
            kind_edit = n_e < want_edit if n_g >= n - want_edit else (n_e < want_edit and rng.random() < 2 / 3)
            ex = make_example(rng, p_edit=1.0 if kind_edit else 0.0)
        else:
            ex = make_example(rng)
        if ex.key in seen:
            continue
        seen.add(ex.key)
        out.append(ex)
        n_e += ex.kind == "edit"
        n_g += ex.kind == "generate"
    return out
