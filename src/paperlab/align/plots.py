"""PNG plots of a scaling run: the measured surface with the fit, and the per-axis curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from paperlab.align.multiview import ScalingGrid
from paperlab.align.scaling import ScalingFit
from paperlab.io.atomic import atomic_write_bytes


def _save(fig: object, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return atomic_write_bytes(path, buf.getvalue())


def plot_surface(
    grid: ScalingGrid, fit: ScalingFit, path: str | Path, chance: float | None = None
) -> Path:
    """3-D surface of the fitted law with the measured grid means as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot(projection="3d")
    nf = np.linspace(min(grid.n_frames), max(grid.n_frames), 40)
    nc = np.linspace(min(grid.n_captions), max(grid.n_captions), 40)
    gf, gc = np.meshgrid(nf, nc, indexing="ij")
    ax.plot_surface(gf, gc, fit.predict(gf, gc), cmap="viridis", alpha=0.55, linewidth=0)
    mf, mc = np.meshgrid(grid.n_frames, grid.n_captions, indexing="ij")
    ax.scatter(mf, mc, grid.mean, color="crimson", s=14, depthshade=False, label="measured (mean)")
    ax.set_xlabel("frames n_f")
    ax.set_ylabel("captions n_c")
    ax.set_zlabel(grid.metric)
    title = f"fit: {fit.formula()}\nR^2 = {fit.r2:.3f}"
    if chance is not None:
        title += f", chance = {chance:.3f}"
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, Path(path))


def plot_curves(
    grid: ScalingGrid, fit: ScalingFit, path: str | Path, chance: float | None = None
) -> Path:
    """Two panels: score vs n_f (one line per n_c) and score vs n_c (one line per n_f), with
    error bars (std over repeats) and the fitted law as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    mean, std = grid.mean, grid.std
    cmap = plt.get_cmap("viridis")
    for j, nc in enumerate(grid.n_captions):
        c = cmap(j / max(1, len(grid.n_captions) - 1))
        axes[0].errorbar(
            grid.n_frames, mean[:, j], yerr=std[:, j], fmt="o", color=c, ms=4, capsize=2
        )
        x = np.linspace(min(grid.n_frames), max(grid.n_frames), 60)
        axes[0].plot(x, fit.predict(x, nc), "--", color=c, label=f"n_c={nc}")
    for i, nf in enumerate(grid.n_frames):
        c = cmap(i / max(1, len(grid.n_frames) - 1))
        axes[1].errorbar(
            grid.n_captions, mean[i, :], yerr=std[i, :], fmt="o", color=c, ms=4, capsize=2
        )
        x = np.linspace(min(grid.n_captions), max(grid.n_captions), 60)
        axes[1].plot(x, fit.predict(nf, x), "--", color=c, label=f"n_f={nf}")
    for ax, lab in zip(axes, ("frames per video n_f", "captions per video n_c"), strict=True):
        if chance is not None:
            ax.axhline(chance, color="grey", lw=1, ls=":", label="chance")
        ax.set_xlabel(lab)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{grid.metric} (k={grid.k})")
    fig.suptitle(f"video-text alignment vs test-time views; fit R^2 = {fit.r2:.3f}", fontsize=10)
    return _save(fig, Path(path))
