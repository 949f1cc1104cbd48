"""Atomic outputs: no half-written directory, nothing existing lost."""

from __future__ import annotations

import pytest

from paperlab.errors import PaperlabError
from paperlab.io import atomic_directory, atomic_write_text
from paperlab.report import Figure, Section, Table, write_report


def test_failure_mid_write_leaves_no_directory(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_is_refused_without_force_and_kept(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(PaperlabError, match="--force"), atomic_directory(target):
        pass
    assert (target / "keep.txt").read_text() == "precious"


def test_force_replaces_only_after_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("crash")
    assert (target / "old.txt").read_text() == "old"  # a failed replacement keeps the old one
    with atomic_directory(target, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_text_replaces_whole_file(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "f.txt", "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two" and sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]


def test_report_renders_tables_figures_and_unbuilt_systems(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = tmp_path / "plot.png"
    plt.plot([1, 2, 3])
    plt.savefig(png)
    plt.close()
    sections = [
        Section("soup", "SoCE", paragraphs=["a <b> c"], tables=[Table("t", ["m", "score"], [["x", 0.51234]])],
                figures=[Figure(png, "a plot")], seconds=1.5),
        Section("icl", "ICL", status="not available yet"),
    ]
    index = write_report(sections, tmp_path / "report")
    html = index.read_text()
    assert "a &lt;b&gt; c" in html and "0.5123" in html and "Not available yet" in html
    assert (tmp_path / "report" / "soup-0-plot.png").read_bytes() == png.read_bytes()
    assert "http" not in html.replace("http-equiv", "")  # offline: no remote assets
