"""What the command-line tools say while they work: one ``c2bus: …`` line on stderr."""

from __future__ import annotations

import contextlib
import sys


def progress(message: str) -> None:
    # Progress is best effort: a closed terminal or pipe must not stop a shutdown midway.
    with contextlib.suppress(OSError):
        print(f"c2bus: {message}", file=sys.stderr, flush=True)  # noqa: T201
