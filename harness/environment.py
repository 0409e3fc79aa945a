"""Where and with what a run ran, for the result file: run id, git commit, machine, package
versions, and how the cores are split between servers and load generator."""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from wiremark import __version__

# beyond the model servers' own (`servers.runner.versions`): the codecs and the load side
LOAD_PACKAGES = ("msgpack", "orjson", "locust", "httptools", "gevent")


def run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    commit = git_commit()
    return f"{stamp}-{commit}" if commit else stamp


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@functools.cache
def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    import psutil

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": model,
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def versions() -> dict[str, str]:
    from wiremark.servers.runner import versions as package_versions

    return {
        "python": platform.python_version(),
        "wiremark": __version__,
        **package_versions(),
        **package_versions(LOAD_PACKAGES),
    }


def split_cores() -> tuple[list[int], list[int]]:
    """(server cores, load-generator cores): the first half and the rest; one core: shared."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return cores, cores
    half = len(cores) // 2
    return cores[:half], cores[half:]


def cpu_list(cores: list[int]) -> str:
    return ",".join(map(str, cores))


def placement_note(shared: bool, external: bool) -> str:
    if shared:
        return "one core, shared by the servers and the load generator"
    if external:
        return "servers not started by bench (--target); load generator pinned (taskset)"
    return "servers pinned apart from the load generator (taskset)"
