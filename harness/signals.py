"""SIGTERM as Ctrl-C: the commands that start servers (bench, overhead, peer) unwind on
either, so a cancelled CI job or a `kill` stops what they started instead of orphaning it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TERMINATED_STATUS = 128 + signal.SIGTERM  # 143, the shell's status for a SIGTERM death


class Terminated(KeyboardInterrupt):
    """Raised by SIGTERM inside `sigterm_unwinds()`: a KeyboardInterrupt, so every clean-up
    written for Ctrl-C runs, and one a caller can still tell apart (exit 143, not 130)."""


def _raise(signum: int, frame: Any) -> None:
    raise Terminated


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Inside the block SIGTERM raises Terminated; the previous handler is back after it."""
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
