"""Files users really bring: broken arrays get one error line (exit 2), degenerate features a
warning, and a scaling fit that ends at a bound says it is not identifiable there."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from paperlab.align.metrics import DegenerateFeaturesWarning, cknna, mutual_knn
from paperlab.align.scaling import fit_scaling, scaling_law
from paperlab.cli import main


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["align", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a fragment the one-line error must contain)."""
    rng = np.random.default_rng(0)
    (d / "garbage.npy").write_bytes(rng.bytes(1000))
    (d / "text.npy").write_text("item,f1,f2\n1,0.5,0.25\n")
    np.save(d / "ok.npy", rng.standard_normal((40, 8)))
    whole = (d / "ok.npy").read_bytes()
    (d / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    np.save(d / "objects.npy", np.array([{"a": 1}] * 40, dtype=object), allow_pickle=True)
    np.save(d / "one_d.npy", np.arange(40.0))
    np.save(d / "four_d.npy", np.zeros((2, 40, 4, 2)))
    np.save(d / "strings.npy", np.array([["a", "b"]] * 40))
    np.save(d / "empty.npy", np.zeros((0, 8)))
    nan = rng.standard_normal((40, 8))
    nan[[3, 17], 2] = np.nan
    np.save(d / "nan.npy", nan)
    (d / "zero.npy").write_bytes(b"")
    (d / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    return {
        "garbage": (d / "garbage.npy", "not a readable .npy"),
        "text": (d / "text.npy", ".npy"),
        "truncated": (d / "truncated.npy", "numpy.save"),
        "objects": (d / "objects.npy", "Python objects"),
        "one_d": (d / "one_d.npy", "(N, D)"),
        "four_d": (d / "four_d.npy", "(L, N, D)"),
        "strings": (d / "strings.npy", "not numbers"),
        "empty": (d / "empty.npy", "at least one item"),
        "nan": (d / "nan.npy", "2 of 40 items (first: row 3)"),
        "zero": (d / "zero.npy", "empty (0 bytes)"),
        "broken": (d / "broken.safetensors", "not a readable .safetensors"),
    }


def test_unreadable_arrays_fail_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = tmp_path / "ok.npy"
    for name, (path, fragment) in _bad_files(tmp_path).items():
        code, _, err = _run(["score", str(path), str(ok)], capsys)
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, err)
        assert fragment in lines[0], (name, lines[0])
        assert "Traceback" not in err


def test_degenerate_features_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    b = rng.standard_normal((60, 8))
    const = np.ones((60, 8))
    with pytest.warns(DegenerateFeaturesWarning, match="constant"):
        mutual_knn(const, b, k=5)
    dup = b.copy()
    dup[10:20] = dup[0]
    with pytest.warns(DegenerateFeaturesWarning, match="10 duplicate rows"):
        cknna(b, dup, k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFeaturesWarning)
        mutual_knn(b, b[::-1].copy(), k=5)  # healthy features: no warning
    np.save(tmp_path / "const.npy", const)
    np.save(tmp_path / "b.npy", b)
    code, out, err = _run(
        ["score", str(tmp_path / "const.npy"), str(tmp_path / "b.npy"), "--json",
         str(tmp_path / "s.json")], capsys,
    )
    assert code == 0, err
    assert "warning:" in err and "constant" in err  # notices go to stderr, results to stdout
    saved = json.loads((tmp_path / "s.json").read_text())
    assert len(saved["warnings"]) == 1 and "constant" in saved["warnings"][0]


def test_cli_variant_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((80, 6))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a + rng.standard_normal((80, 6)))
    got = {}
    for variant in ("paper", "platonic-rep"):
        code, _, err = _run(["score", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--metric",
                             "cknna", "--variant", variant, "--k", "5", "--json",
                             str(tmp_path / f"{variant}.json")], capsys)
        assert code == 0, err
        got[variant] = json.loads((tmp_path / f"{variant}.json").read_text())
        assert got[variant]["variant"] == variant
    assert got["paper"]["score"] != got["platonic-rep"]["score"]
    code, _, err = _run(["score", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--metric",
                         "svcca", "--variant", "platonic-rep", "--dims", "3", "--json",
                         str(tmp_path / "sv.json")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "sv.json").read_text())["dims"] == 3
    code, _, err = _run(["score", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--variant",
                         "paper"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mutual_knn" in err


def test_fit_at_its_bound_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nf, nc = (g.ravel().astype(float) for g in np.meshgrid([1, 2, 4, 8], [1, 2, 4, 8], indexing="ij"))
    # a curve that keeps rising linearly in log n: its limit is beyond any S_inf <= 1
    y = 0.5 + 0.2 * np.log(nf) + 0.2 * np.log(nc)
    fit = fit_scaling(nf, nc, y, s_inf_max=1.0)
    assert fit.at_bounds.get("S_inf") == "upper" and not fit.identifiable
    assert "not identifiable" in fit.notes()[0] and fit.to_dict()["identifiable"] is False
    # a well-posed grid is not flagged
    good = scaling_law(nf, nc, 0.41, 0.15, 0.75, 0.13, 1.30)
    clean = fit_scaling(nf, nc, good, s_inf_max=1.0)
    assert clean.identifiable and clean.notes() == []
    pts = tmp_path / "p.csv"
    pts.write_text("n_f,n_c,score\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(nf, nc, y, strict=True)))
    code, out, err = _run(["scaling", str(pts)], capsys)
    assert code == 0, err
    assert "at upper bound" in out and "not identifiable" in err


def test_the_variant_shows_in_the_score_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'[platonic-rep]' in a rich title was read as markup and vanished from the table."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((80, 8)).astype(np.float32))
    np.save(tmp_path / "b.npy", rng.standard_normal((80, 6)).astype(np.float32))
    code, out, err = _run(["score", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--metric", "cknna",
                           "--variant", "platonic-rep"], capsys)
    assert code == 0, err
    assert "platonic-rep" in out
