"""The task's ground truth: renderer/detector, the reasoning grammar, and prompt resolution."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paperlab.paradiff.errors import PromptError
from paperlab.paradiff.scene import COLOURS, SHAPES, SIZES, Obj, detect, render, render_batch
from paperlab.paradiff.task import (
    MAX_OBJECTS,
    PROMPT_LEN,
    TEXT_LEN,
    GrammarError,
    check_prompt,
    make_examples,
    parse_text,
    scene_text,
)
from paperlab.paradiff.train import bench_examples

objs = st.builds(Obj, st.integers(0, 3), st.integers(0, 3), st.sampled_from(SIZES), st.sampled_from(COLOURS),
                 st.sampled_from(SHAPES))
scenes = st.lists(objs, min_size=1, max_size=MAX_OBJECTS, unique_by=lambda o: (o.row, o.col)).map(
    lambda xs: tuple(sorted(xs)))


@settings(max_examples=200, deadline=None)
@given(scenes)
def test_detector_reads_every_rendered_scene_exactly(scene: tuple[Obj, ...]) -> None:
    det = detect(render(scene))[0]
    assert det.scene == scene
    assert det.confidence == 1.0 and det.valid


@settings(max_examples=200, deadline=None)
@given(scenes)
def test_text_grammar_round_trips(scene: tuple[Obj, ...]) -> None:
    assert parse_text([*scene_text(scene), "<eos>", "<pad>"]) == scene


@pytest.mark.parametrize("words", [
    [], ["big", "red", "circle"], ["big", "red", "circle", "e9"], ["red", "big", "circle", "a1"],
    ["big", "red", "circle", "a1", ";", "small", "blue", "square", "a1"],  # two in one cell
    ["big", "red", "circle", "b1", ";", "small", "blue", "square", "a1"],  # out of reading order
    ["big", "red", "circle", "a1", ";"],
])
def test_parser_rejects_bad_text(words: list[str]) -> None:
    with pytest.raises(GrammarError):
        parse_text(words)


def test_detector_rejects_a_blurred_cell_as_unclear() -> None:
    img = render((Obj(1, 1, "big", "red", "circle"),)).astype(float) / 255
    img[8:16, 8:16] = 0.5 * img[8:16, 8:16] + 0.5 * render((Obj(1, 1, "big", "blue", "square"),))[8:16, 8:16] / 255
    det = detect(img[None])[0]
    assert not det.valid and det.confidence < 0.5


def test_examples_resolve_their_references() -> None:
    """Replaying each instruction by hand on the input scene gives the target scene."""
    for ex in make_examples(400, seed=3):
        assert len(ex.prompt) <= PROMPT_LEN and len(scene_text(ex.target)) < TEXT_LEN
        if ex.kind == "generate":
            assert ex.input_scene is None and ex.prompt[0] == "draw"
            continue
        assert ex.input_scene is not None
        before, after = set(ex.input_scene), set(ex.target)
        assert set(ex.untouched) <= before & after
        op = ex.prompt[0]
        changed = before - set(ex.untouched)
        if op == "remove":
            assert len(after) == len(before) - 1
        elif op == "swap":
            a, b = sorted(changed)
            assert {(o.row, o.col, o.colour) for o in after - set(ex.untouched)} == {
                (a.row, a.col, b.colour), (b.row, b.col, a.colour)}
        elif op == "recolour" and ex.prompt[-1] in COLOURS and "of" not in ex.prompt:
            (new,) = after - set(ex.untouched)
            assert new.colour == ex.prompt[-1]


def test_a_generation_prompt_by_hand() -> None:
    """'a <size> <colour> <shape> left-of the <ref>' puts the shape just left of its anchor."""
    examples = [e for e in make_examples(300, seed=5) if e.kind == "generate" and "left-of" in e.prompt]
    assert examples
    for ex in examples:
        i = ex.prompt.index("left-of")
        ref = ex.prompt[i + 2]  # "the circle ..." or "the red shape ..."
        placed = [o for o in ex.target if ex.prompt[i - 1] == o.shape and ex.prompt[i - 2] == o.colour]
        anchors = [o for o in ex.target if ref in (o.shape, o.colour)]
        assert any(a.row == p.row and a.col == p.col + 1 for p in placed for a in anchors)


def test_benchmark_split_is_held_out_and_two_thirds_edits() -> None:
    from paperlab.paradiff.config import get_preset

    bench = bench_examples(get_preset("tiny"))
    assert len(bench) == 300 and sum(e.kind == "edit" for e in bench) == 200
    assert len({e.key for e in bench}) == 300
    train = make_examples(2000, seed=0, exclude={e.key for e in bench})
    assert not {e.key for e in train} & {e.key for e in bench}


def test_prompt_check_names_unknown_words() -> None:
    assert check_prompt("remove the red shape") == ["remove", "the", "red", "shape"]
    with pytest.raises(PromptError, match="purple"):
        check_prompt("recolour the circle to purple")
    with pytest.raises(PromptError, match="at most"):
        check_prompt(" ".join(["a"] * (PROMPT_LEN + 1)))


def test_render_batch_shape() -> None:
    imgs = render_batch([(Obj(0, 0, "big", "red", "square"),), ()])
    assert imgs.shape == (2, 32, 32, 3) and imgs.dtype == np.uint8 and imgs[1].max() == 0
