"""End to end on real packaged encoders: clips -> features -> grid -> fit -> control -> plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paperlab.align.demo import report_rows, write_outputs
from paperlab.align.experiment import encode_clips, run_scaling
from paperlab.align.video import ClipSpec


@pytest.mark.slow
def test_tiny_scaling_run_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "cache"))
    spec = ClipSpec(n_items=24, n_frames=3, n_captions=3, size=64, seed=1)
    run = run_scaling(spec, repeats=2, k=3)
    assert run.grid.scores.shape == (3, 3, 2)
    assert np.isfinite(run.fit.r2) and set(run.fit.params) == {
        "S_inf",
        "C_f",
        "alpha",
        "C_c",
        "beta",
    }
    assert run.chance == pytest.approx(3 / 23)
    # the features were cached, atomically, and are reused exactly
    cached = list((tmp_path / "cache" / "align").glob("clips-*.npz"))
    assert len(cached) == 1
    fr, ca, facts = encode_clips(spec)
    assert fr.shape == (24, 3, 1280) and ca.shape == (24, 3, 384) and len(facts) == 24
    surface, curves = write_outputs(run, tmp_path / "out")
    assert surface.stat().st_size > 10_000 and curves.stat().st_size > 10_000
    assert (tmp_path / "out" / "results.json").is_file()
    assert any(r[0] == "R^2" for r in report_rows(run))


def test_report_flags_a_parameter_at_its_bound() -> None:
    """The report once showed 'S_inf 1.000 ± 1.141' for a fit stopped at its bound."""
    from types import SimpleNamespace

    from paperlab.align.scaling import fit_scaling, scaling_law

    nf, nc = np.meshgrid([1, 2, 4, 8], [1, 2, 4], indexing="ij")
    y = scaling_law(nf, nc, 1.3, 0.4, 0.8, 0.3, 1.1)
    fit = fit_scaling(nf.ravel(), nc.ravel(), y.ravel(), s_inf_max=1.0)
    assert fit.at_bounds.get("S_inf") == "upper"
    grid = SimpleNamespace(mean=np.zeros((2, 2)), std=np.zeros((2, 2)), n_frames=[1, 2], n_captions=[1, 2])
    run = SimpleNamespace(fit=fit, grid=grid, control=grid, chance=0.1)
    rows = {r[0]: r[1] for r in report_rows(run)}  # type: ignore[arg-type]
    assert rows["S_inf"] == "1.000 (at its upper bound)"
    assert "±" in rows["C_f"]
