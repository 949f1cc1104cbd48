"""Wall time of `paperlab --help` against its floor, typer's own import, in the same run.

Goal (issue 13): `paperlab --help` <= 0.35 s. Each command runs in a fresh interpreter,
best of N, so disk caches are warm for both.

    python bench/cli/help_time.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def best_wall(cmd: list[str], repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    return min(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    py = sys.executable
    rows = {
        "python -c pass": best_wall([py, "-c", "pass"], args.repeats),
        "import typer (floor)": best_wall([py, "-c", "import typer"], args.repeats),
        "paperlab --help": best_wall([py, "-m", "paperlab", "--help"], args.repeats),
        "paperlab soup --help": best_wall([py, "-m", "paperlab", "soup", "--help"], args.repeats),
    }
    floor = rows["import typer (floor)"]
    print(f"{'command':<24} {'best wall s':>11} {'x typer':>8}")
    for name, wall in rows.items():
        print(f"{name:<24} {wall:>11.3f} {wall / floor:>8.2f}")
    goal = rows["paperlab --help"] <= 0.35
    print(f"goal paperlab --help <= 0.35 s: {'met' if goal else 'NOT met'}")
    out = Path(__file__).parent / "results" / "help_time.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"best_wall_s": rows, "repeats": args.repeats}, indent=2))


if __name__ == "__main__":
    main()
