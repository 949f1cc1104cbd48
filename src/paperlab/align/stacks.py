"""Reading user inputs for the CLI: layer stacks of features and scaling-grid point tables."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from paperlab.align.encoders import load_features, read_safetensors
from paperlab.errors import AlignError


def _natural(name: str) -> list[object]:
    # "layer.10" sorts after "layer.9"
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_npy(p: Path) -> np.ndarray:
    """``np.load`` of a plain numeric .npy file, with one clear error for anything else.

    Raises:
        AlignError: empty, truncated or non-.npy bytes, a pickled (object) array, or a
            non-numeric dtype.
    """
    if not p.stat().st_size:
        raise AlignError(f"{p} is empty (0 bytes); write the features with numpy.save")
    with p.open("rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":  # numpy would read any other bytes as a pickle
        raise AlignError(f"{p} is not a readable .npy file (no NUMPY header: text, CSV or other "
                         "bytes renamed .npy?); write the features with numpy.save")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as exc:
        why = "it holds Python objects (pickled)" if "pickle" in str(exc) else str(exc).split("\n")[0]
        raise AlignError(f"{p} is not a plain numeric .npy array: {why}; save a float array "
                         "with numpy.save") from None
    except (OSError, EOFError) as exc:
        raise AlignError(f"{p} is not a readable .npy file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'truncated'}); "
                         "write it again with numpy.save") from None
    if not isinstance(arr, np.ndarray):
        raise AlignError(f"{p} is an .npz archive, not an .npy array; save one array with numpy.save")
    if arr.dtype.kind not in "biuf":
        raise AlignError(f"{p} holds {arr.dtype} values, not numbers; features must be numeric")
    return arr


def _check_layers(p: Path, names: list[str], layers: list[np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    for name, x in zip(names, layers, strict=True):
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise AlignError(f"{p} ({name}) has shape {x.shape}: it needs at least one item and one dim")
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise AlignError(
                f"{p} ({name}) has NaN or inf in {len(rows)} of {x.shape[0]} items (first: row "
                f"{int(rows[0])}); drop those items on both sides or fix the extraction"
            )
    return names, layers


def load_stack(path: str | Path, key: str | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Layers of features from one file, with their names.

    .npy (N, D) is one layer; .npy (L, N, D) is L layers; .safetensors gives every 2-D tensor
    as a layer (natural name order), or just ``key``.

    Raises:
        AlignError: unreadable file, wrong shapes, non-finite values, or an unknown key.
    """
    p = Path(path)
    if not p.is_file():
        raise AlignError(f"feature file {p} does not exist")
    if p.suffix == ".npy":
        arr = read_npy(p)
        if arr.ndim not in (2, 3):
            raise AlignError(f"{p} holds shape {arr.shape}; it must be (N, D) features or an "
                             "(L, N, D) stack of layers")
        if arr.ndim == 2:
            return _check_layers(p, [p.stem], [arr.astype(np.float32)])
        return _check_layers(p, [f"{p.stem}[{i}]" for i in range(len(arr))],
                             [a.astype(np.float32) for a in arr])
    if p.suffix == ".safetensors":
        if key is not None:
            return _check_layers(p, [key], [load_features(p, key)])
        tensors = {n: t for n, t in read_safetensors(p).items() if t.ndim == 2}
        if not tensors:
            raise AlignError(f"{p} holds no 2-D (items, dims) tensor")
        names = sorted(tensors, key=_natural)
        return _check_layers(p, names, [tensors[n].astype(np.float32) for n in names])
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
