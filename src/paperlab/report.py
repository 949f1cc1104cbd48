"""The demo report: sections of text, tables and PNG figures rendered into one offline HTML page.

A system's demo returns a :class:`Section`; :func:`write_report` renders all sections into
``index.html`` beside the figures. Nothing is fetched from the network: the page has inline CSS
and relative image links, so the directory can be copied anywhere and opened offline.
"""

from __future__ import annotations

import datetime as _dt
import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from paperlab.io.atomic import atomic_directory


@dataclass
class Table:
    """A table: a caption, column headers, and rows of cells (already formatted or numbers)."""

    caption: str
    headers: list[str]
    rows: list[list[object]]


@dataclass
class Figure:
    """A PNG figure on disk with its caption; the report copies it into its own directory."""

    path: Path
    caption: str


@dataclass
class Section:
    """One system's part of the report."""

    system: str
    title: str
    status: str = "ok"  # "ok", "failed", or "not available yet"
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    seconds: float | None = None


def _fmt(cell: object) -> str:
    if isinstance(cell, float):
        return f"{cell:.4g}"
    return str(cell)


def _render_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in table.rows
    )
    return (
        f"<table><caption>{html.escape(table.caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666;margin-top:0}
section{border-top:1px solid #ddd;padding-top:1em;margin-top:1.5em}
.status{font-size:.8em;padding:.15em .5em;border-radius:.6em;margin-left:.5em;vertical-align:middle}
.ok{background:#d8f5d8}.failed{background:#f8d0d0}.na{background:#eee;color:#777}
table{border-collapse:collapse;margin:1em 0;font-size:.9em} caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.9em}
ul.na-list li{color:#777}
"""


def render_html(sections: list[Section], figure_names: dict[int, str]) -> str:
    """Render sections to a standalone HTML page. ``figure_names`` maps id(Figure) -> file name."""
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>paperlab report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>paperlab report</h1>",
        f"<p class='meta'>Generated {now} by <code>paperlab demo</code>.</p>",
    ]
    built = [s for s in sections if s.status != "not available yet"]
    missing = [s for s in sections if s.status == "not available yet"]
    for s in built:
        cls = "ok" if s.status == "ok" else "failed"
        took = f" ({s.seconds:.1f} s)" if s.seconds is not None else ""
        parts.append(
            f"<section id='{html.escape(s.system)}'><h2>{html.escape(s.title)}"
            f"<span class='status {cls}'>{html.escape(s.status)}{took}</span></h2>"
        )
        parts.extend(f"<p>{html.escape(p)}</p>" for p in s.paragraphs)
        parts.extend(_render_table(t) for t in s.tables)
        for f in s.figures:
            name = html.escape(figure_names[id(f)])
            parts.append(
                f"<figure><img src='{name}' alt='{html.escape(f.caption)}'>"
                f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    if missing:
        parts.append("<section id='not-available'><h2>Not available yet</h2><ul class='na-list'>")
        parts.extend(f"<li>{html.escape(s.title)}</li>" for s in missing)
        parts.append("</ul></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(sections: list[Section], out_dir: Path) -> Path:
    """Write ``index.html`` and its figures into ``out_dir`` (replaced atomically).

    Returns:
        The path of ``index.html``.
    """
    with atomic_directory(out_dir, force=True) as tmp:
        names: dict[int, str] = {}
        for s in sections:
            for i, f in enumerate(s.figures):
                name = f"{s.system}-{i}-{Path(f.path).name}"
                shutil.copyfile(f.path, tmp / name)
                names[id(f)] = name
        (tmp / "index.html").write_text(render_html(sections, names), encoding="utf-8")
    return Path(out_dir) / "index.html"
