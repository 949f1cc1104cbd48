"""The video-text test-time scaling experiment on procedural clips with the packaged encoders.

encode clips (EfficientNet-Lite0 per frame, MiniLM per caption; cached on disk keyed on the
clip spec) -> (n_f, n_c) grid of alignment with repeated random subsets -> scaling-law fit ->
shuffled-pairing control. The frame and caption features are the ``(N, F, D_v)`` and
``(N, C, D_t)`` arrays of :func:`paperlab.align.multiview.scaling_grid`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from paperlab.align.multiview import ScalingGrid, scaling_grid
from paperlab.align.scaling import ScalingFit, fit_scaling
from paperlab.align.video import ClipSpec, make_clips
from paperlab.io.atomic import atomic_write_bytes
from paperlab.io.cache import cache_dir as shared_cache_dir

log = logging.getLogger(__name__)

#: Bump when rendering or encoding changes, so stale cached features are not reused.
FEATURE_VERSION = 1


def cache_dir() -> Path:
    """``$PAPERLAB_CACHE/align`` or ``~/.cache/paperlab/align``."""
    return shared_cache_dir("align")


def encode_clips(
    spec: ClipSpec, use_cache: bool = True
) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Render the spec's clips and encode them: frames (N, F, 1280), captions (N, C, 384), facts.

    Results are cached (atomically written .npz) keyed on the spec and :data:`FEATURE_VERSION`.
    """
    key = hashlib.sha256(
        json.dumps({**asdict(spec), "v": FEATURE_VERSION}, sort_keys=True).encode()
    ).hexdigest()[:16]
    path = cache_dir() / f"clips-{key}.npz"
    if use_cache and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            log.info("using cached clip features %s", path)
            return z["frames"], z["captions"], json.loads(str(z["facts"]))
    from paperlab.align.encoders import get_encoder, get_image_encoder

    vis, txt = get_image_encoder("efficientnet_lite0"), get_encoder("minilm")
    frames: list[np.ndarray] = []
    caps: list[np.ndarray] = []
    facts: list[dict[str, str]] = []
    for batch in make_clips(spec):
        imgs = [f for clip in batch for f in clip.frames]
        frames.append(vis.encode(imgs, image_size=None).reshape(len(batch), spec.n_frames, -1))
        texts = [c for clip in batch for c in clip.captions]
        caps.append(txt.encode(texts).reshape(len(batch), spec.n_captions, -1))
        facts.extend(clip.facts for clip in batch)
    fr, ca = np.concatenate(frames), np.concatenate(caps)
    if use_cache:
        buf = io.BytesIO()
        np.savez(buf, frames=fr, captions=ca, facts=np.array(json.dumps(facts)))
        atomic_write_bytes(path, buf.getvalue())
    return fr, ca, facts


def default_axis(n: int) -> list[int]:
    """Grid values 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ... up to and including ``n``."""
    vals = [v for v in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64) if v < n]
    return [*vals, n]


@dataclass
class ScalingRun:
    """Everything the demo and the CLI report: the grid, the fit, and the shuffled control."""

    spec: ClipSpec
    grid: ScalingGrid
    fit: ScalingFit
    control: ScalingGrid
    chance: float

    def to_dict(self) -> dict[str, object]:
        return {
            "spec": asdict(self.spec),
            "grid": self.grid.to_dict(),
            "fit": self.fit.to_dict(),
            "control": self.control.to_dict(),
            "chance": self.chance,
        }


def run_scaling(
    spec: ClipSpec,
    n_frames: list[int] | None = None,
    n_captions: list[int] | None = None,
    *,
    repeats: int = 3,
    metric: str = "mutual_knn",
    k: int = 10,
    how: str = "mean",
    use_cache: bool = True,
) -> ScalingRun:
    """Encode (or load) the clips, score the grid, fit the law, and run the shuffled control."""
    frames, caps, _ = encode_clips(spec, use_cache=use_cache)
    nf = n_frames or default_axis(spec.n_frames)
    nc = n_captions or default_axis(spec.n_captions)
    grid = scaling_grid(
        frames, caps, nf, nc, repeats=repeats, metric=metric, k=k, how=how, seed=spec.seed
    )
    f_nf, f_nc, y = grid.points()
    # mutual k-NN and the other metrics here are bounded by 1, and so is their limit S_inf
    fit = fit_scaling(f_nf, f_nc, y, s_inf_max=1.0)
    control = scaling_grid(
        frames,
        caps,
        [nf[-1]],
        [nc[-1]],
        repeats=max(repeats, 5),
        metric=metric,
        k=k,
        how=how,
        seed=spec.seed + 1,
        shuffle=True,
    )
    chance = k / (spec.n_items - 1) if metric == "mutual_knn" else float("nan")
    return ScalingRun(spec, grid, fit, control, chance)
