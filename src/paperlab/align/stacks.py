"""Reading user inputs for the CLI: layer stacks of features and scaling-grid point tables."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from paperlab.align.encoders import load_features
from paperlab.errors import AlignError


def _natural(name: str) -> list[object]:
    # "layer.10" sorts after "layer.9"
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def load_stack(path: str | Path, key: str | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Layers of features from one file, with their names.

    .npy (N, D) is one layer; .npy (L, N, D) is L layers; .safetensors gives every 2-D tensor
    as a layer (natural name order), or just ``key``.

    Raises:
        AlignError: unreadable file, wrong shapes, or an unknown key.
    """
    p = Path(path)
    if not p.is_file():
        raise AlignError(f"feature file {p} does not exist")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False) if p.stat().st_size else None
        if arr is None or arr.ndim not in (2, 3):
            raise AlignError(f"{p} must hold (N, D) or (L, N, D) features")
        if arr.ndim == 2:
            return [p.stem], [arr.astype(np.float32)]
        return [f"{p.stem}[{i}]" for i in range(len(arr))], [a.astype(np.float32) for a in arr]
    if p.suffix == ".safetensors":
        if key is not None:
            return [key], [load_features(p, key)]
        from safetensors.numpy import load_file

        tensors = {n: t for n, t in load_file(str(p)).items() if t.ndim == 2}
        if not tensors:
            raise AlignError(f"{p} holds no 2-D (items, dims) tensor")
        names = sorted(tensors, key=_natural)
        return names, [tensors[n].astype(np.float32) for n in names]
    raise AlignError(f"unsupported feature file {p.name}: use .npy or .safetensors")


def read_points(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(n_f, n_c, score, sigma-or-None) from a CSV with header ``n_f,n_c,score[,sigma]``."""
    p = Path(path)
    if not p.is_file():
        raise AlignError(f"points file {p} does not exist")
    with p.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"n_f", "n_c", "score"}
    if not rows or not need <= set(rows[0]):
        raise AlignError(f"{p} needs a header with columns n_f,n_c,score (and optionally sigma)")
    try:
        cols = {c: np.array([float(r[c]) for r in rows]) for c in rows[0] if c in need | {"sigma"}}
    except (TypeError, ValueError) as exc:
        raise AlignError(f"{p} has a non-numeric cell ({exc}); fix that row") from None
    return cols["n_f"], cols["n_c"], cols["score"], cols.get("sigma")
