"""``python -m paperlab.galaxy ...``: the galaxy commands without loading every system's CLI.

Device processes start this way (:func:`paperlab.galaxy.device.local.spawn_device`), so a device is
up in the time it takes to import galaxy alone; errors print as one line, exit code 2, like
``paperlab galaxy``.
"""

from __future__ import annotations

import sys

from paperlab.errors import PaperlabError
from paperlab.galaxy.cli import app


def main() -> None:
    try:
        app(prog_name="paperlab galaxy")
    except PaperlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
