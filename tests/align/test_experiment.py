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
