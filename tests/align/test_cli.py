"""The `paperlab align` commands as a user runs them: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paperlab.align.metrics import mutual_knn
from paperlab.align.scaling import PUBLISHED_FITS, scaling_law

SRC = Path(__file__).resolve().parents[2] / "src"


def _paperlab(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "paperlab", "align", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def feats(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 16)).astype(np.float32)
    b = (a @ rng.standard_normal((16, 8)) + 0.5 * rng.standard_normal((300, 8))).astype(np.float32)
    np.save(tmp_path / "A.npy", a)
    np.save(tmp_path / "B.npy", b)
    return tmp_path / "A.npy", tmp_path / "B.npy", a, b


def test_score_prints_and_writes_the_metric(
    feats: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path, tscale: float
) -> None:
    pa, pb, a, b = feats
    res = _paperlab(
        "score",
        str(pa),
        str(pb),
        "--metric",
        "mutual_knn",
        "--k",
        "10",
        "--json",
        "s.json",
        cwd=tmp_path,
        timeout=120 * tscale,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["score"] == pytest.approx(mutual_knn(a, b, k=10))
    assert f"{out['score']:.4f}" in res.stdout
    assert out["chance"] == pytest.approx(10 / 299)


def test_score_searches_layer_pairs(
    feats: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path, tscale: float
) -> None:
    _, pb, a, b = feats
    rng = np.random.default_rng(1)
    np.save(
        tmp_path / "L.npy",
        np.stack([rng.standard_normal(a.shape), a, rng.standard_normal(a.shape)]).astype(
            np.float32
        ),
    )
    res = _paperlab(
        "score",
        "L.npy",
        str(pb),
        "--metric",
        "cka_linear",
        "--json",
        "l.json",
        cwd=tmp_path,
        timeout=120 * tscale,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "l.json").read_text())
    assert out["layer_a"] == "L[1]" and len(out["all_scores"]) == 3


def test_user_errors_are_one_line_exit_2(
    feats: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path, tscale: float
) -> None:
    pa, pb, _, _ = feats
    res = _paperlab(
        "score", str(pa), str(pb), "--metric", "cosine", cwd=tmp_path, timeout=60 * tscale
    )
    assert res.returncode == 2
    assert res.stderr.strip().startswith(
        "error: unknown metric 'cosine'; choose one of: mutual_knn"
    )
    np.save(tmp_path / "short.npy", np.zeros((10, 3), dtype=np.float32))
    res = _paperlab("score", str(pa), "short.npy", cwd=tmp_path, timeout=60 * tscale)
    assert res.returncode == 2 and "same items" in res.stderr
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "old.txt").write_text("precious")
    res = _paperlab("demo", "--out", "keep", cwd=tmp_path, timeout=60 * tscale)
    assert res.returncode == 2 and "--force" in res.stderr
    assert (tmp_path / "keep" / "old.txt").read_text() == "precious"


def test_scaling_recovers_a_published_fit_from_csv(tmp_path: Path, tscale: float) -> None:
    p = PUBLISHED_FITS["VideoMAEv2"]
    lines = ["n_f,n_c,score"]
    for nf in (1, 2, 4, 8, 16):
        for nc in (1, 2, 4, 8):
            y = scaling_law(nf, nc, p["S_inf"], p["C_f"], p["alpha"], p["C_c"], p["beta"])
            lines.append(f"{nf},{nc},{float(y):.10f}")
    (tmp_path / "pts.csv").write_text("\n".join(lines) + "\n")
    res = _paperlab("scaling", "pts.csv", "--json", "fit.json", cwd=tmp_path, timeout=60 * tscale)
    assert res.returncode == 0, res.stderr
    fit = json.loads((tmp_path / "fit.json").read_text())
    for key, want in p.items():
        assert fit["params"][key] == pytest.approx(want, abs=1e-4)
    assert "R^2" in res.stdout
    (tmp_path / "bad.csv").write_text("frames,captions\n1,2\n")
    res = _paperlab("scaling", "bad.csv", cwd=tmp_path, timeout=60 * tscale)
    assert res.returncode == 2 and "n_f,n_c,score" in res.stderr


def test_scaling_fit_at_a_bound_is_flagged_once(tmp_path: Path, tscale: float) -> None:
    """Scores that want S_inf above its bound of 1: the table says 'at upper bound' and the warning
    appears exactly once (the library logged it and the command printed it too)."""
    lines = ["n_f,n_c,score"]
    for nf in (1, 2, 4, 8, 16):
        for nc in (1, 2, 4, 8):
            lines.append(f"{nf},{nc},{float(scaling_law(nf, nc, 1.3, 0.4, 0.8, 0.3, 1.1)):.10f}")
    (tmp_path / "pts.csv").write_text("\n".join(lines) + "\n")
    res = _paperlab("scaling", "pts.csv", cwd=tmp_path, timeout=60 * tscale)
    assert res.returncode == 0, res.stderr
    assert "at upper bound" in res.stdout
    warned = [x for x in res.stderr.splitlines() if "S_inf" in x]
    assert len(warned) == 1, res.stderr
