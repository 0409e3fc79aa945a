"""Run the `wiremark` command as a user does: a fresh interpreter, output captured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def wiremark(
    *args: str | Path,
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wiremark", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
