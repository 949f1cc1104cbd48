"""The recipe's plot (OUT/report.png): held-out losses after every stage."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

PANELS = (("heldout_loss_text", "held-out stage-1 text loss"),
          ("heldout_loss_gsm8k", "held-out GSM8K solution loss"),
          ("heldout_loss_chat", "held-out chat (reply) loss"))


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Bar charts of the held-out losses per stage, written atomically to ``path``."""
    stages = report.get("stages", {})
    if not stages:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paperlab.io.atomic import atomic_write_bytes

    names = list(stages)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.0))
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        shown = [n for n in names if key in stages[n]]
        vals = [stages[n][key] for n in shown]
        colors = ["tab:orange" if n == "soup" else "tab:blue" for n in shown]
        ax.bar(range(len(shown)), vals, color=colors)
        ax.set_xticks(range(len(shown)), [n.replace("stage2/", "") for n in shown], rotation=45, ha="right",
                      fontsize=7)
        ax.set_title(title)
        if vals:  # close differences (the soup against its seeds) stay visible; a wide range starts at 0
            low = min(vals) * 0.95 if min(vals) > 0.3 * max(vals) else 0.0
            ax.set_ylim(low, max(vals) * 1.03)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
