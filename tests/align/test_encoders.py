"""Packaged encoders (offline), the registry, feature files, and the procedural clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from paperlab.align.effnet import EfficientNetLite0, load_efficientnet_lite0, preprocess
from paperlab.align.encoders import ENCODERS, get_encoder, load_features, register_encoder
from paperlab.align.video import (
    COLOURS,
    DIRECTIONS,
    ClipSpec,
    caption,
    make_clips,
    render_frames,
    sample_facts,
)
from paperlab.errors import AlignError


def test_effnet_architecture_matches_the_packaged_weights_exactly() -> None:
    model = load_efficientnet_lite0()  # strict: raises on any missing or unexpected tensor
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == pytest.approx(4.65e6, rel=0.01)  # EfficientNet-Lite0's published size
    img = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    with torch.inference_mode():
        feats = model.features(preprocess(torch.from_numpy(img), None))
    assert feats.shape == (2, 1280)
    assert sum(p.numel() for p in EfficientNetLite0().parameters()) == n_params


def test_effnet_recognises_a_checkerboard_as_a_crossword() -> None:
    # a real-weights check of the hand-built architecture: ImageNet class 918 is "crossword puzzle"
    yy, xx = np.mgrid[0:224, 0:224]
    board = (((yy // 28) + (xx // 28)) % 2 * 255).astype(np.uint8)
    x = preprocess(torch.from_numpy(np.stack([board] * 3, -1)[None]))
    with torch.inference_mode():
        logits = load_efficientnet_lite0()(x)
    assert int(logits.argmax()) == 918


@pytest.mark.slow
def test_packaged_minilm_encodes_offline() -> None:
    enc = get_encoder("minilm")
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    e = enc.encode(
        ["a red circle moves left", "a crimson disc slides to the left", "tax law in 1850"]
    )
    assert e.shape == (3, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]  # paraphrases are closer than an unrelated sentence


def test_registry_rejects_unknown_names_and_bad_factories() -> None:
    with pytest.raises(AlignError, match="choose one of"):
        get_encoder("clip-vit")
    with pytest.raises(TypeError, match="no required arguments"):
        register_encoder("needs-args")(lambda path: None)  # type: ignore[arg-type,return-value]

    class Const:
        name, dim = "const", 2

        def encode(self, items: list[object], batch_size: int = 32) -> np.ndarray:
            return np.ones((len(items), 2), dtype=np.float32)

    register_encoder("test-const")(Const)
    try:
        assert get_encoder("test-const").encode(["a", "b"]).shape == (2, 2)
    finally:
        ENCODERS.pop("test-const")


def test_load_features_from_npy_and_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    assert np.array_equal(load_features(tmp_path / "a.npy"), x)
    save_file({"layer.1": x, "layer.2": 2 * x}, str(tmp_path / "b.safetensors"))
    assert np.array_equal(load_features(tmp_path / "b.safetensors", "layer.2"), 2 * x)
    with pytest.raises(AlignError, match="pick one with --key"):
        load_features(tmp_path / "b.safetensors")
    with pytest.raises(AlignError, match="has no tensor"):
        load_features(tmp_path / "b.safetensors", "layer.3")
    (tmp_path / "c.txt").write_text("1 2 3")
    with pytest.raises(AlignError, match="use .npy or .safetensors"):
        load_features(tmp_path / "c.txt")


def test_clips_are_deterministic_and_captions_say_only_true_facts() -> None:
    spec = ClipSpec(n_items=12, n_frames=3, n_captions=4, size=48, seed=5)
    one = [c for batch in make_clips(spec, batch=5) for c in batch]
    two = [c for batch in make_clips(spec, batch=12) for c in batch]
    assert len(one) == 12
    assert all(
        np.array_equal(a.frames, b.frames) and a.captions == b.captions
        for a, b in zip(one, two, strict=True)
    )
    for clip in one:
        assert clip.frames.shape == (3, 48, 48, 3) and clip.frames.dtype == np.uint8
        for text in clip.captions:
            for name, (_, words) in COLOURS.items():
                if any(f" {w} " in f" {text} " for w in words):
                    assert name == clip.facts["colour"], text


def test_object_moves_in_its_direction() -> None:
    rng = np.random.default_rng(0)
    facts = {"colour": "red", "shape": "square", "size": "large", "direction": "right"}
    frames = render_frames(facts, 4, 64, rng)
    red = (frames[..., 0] > 200) & (frames[..., 1] < 60) & (frames[..., 2] < 60)
    xs = [np.nonzero(m)[1].mean() for m in red]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 20
    assert DIRECTIONS["right"][0] == (1.0, 0.0)
    text = caption(sample_facts(rng), rng)
    assert text.endswith(".") and "  " not in text
