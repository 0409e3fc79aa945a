"""The arrows go one way (DESIGN.md): harness -> servers -> payloads; reports read result
files only; the harness never imports the CLI; the server process loads nothing of the
harness, the reports, pandas or httpx. Each check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def top(modules: set[str], *prefixes: str) -> set[str]:
    return {m for m in modules if m.split(".")[0] in prefixes or m.startswith(prefixes)}


def test_the_server_process_loads_nothing_of_the_measuring_side():
    modules = loaded_after(
        "from wiremark.cli import build_parser\n"
        "build_parser(['serve', '--transport', 'json'])\n"
        "from wiremark.servers import serve, grpc_server, http_server, pipeline"
    )
    measuring = top(modules, "wiremark.harness", "wiremark.reports", "httpx", "pandas", "locust")
    assert measuring == set()


def test_the_harness_never_imports_the_cli():
    modules = loaded_after(
        "import importlib, pkgutil, wiremark.harness as h\n"
        "for m in pkgutil.walk_packages(h.__path__, 'wiremark.harness.'):\n"
        "    if not m.name.endswith(('.users', '.worker')):  # Locust patches for gevent\n"
        "        importlib.import_module(m.name)"
    )
    assert "wiremark.harness.bench" in modules and "wiremark.cli" not in modules


def test_building_every_command_s_parser_patches_nothing():
    """`wiremark --help` builds every command's parser: none may import Locust, which
    patches the process for gevent (`wiremark worker` loads it only when it runs)."""
    modules = loaded_after("from wiremark.cli import build_parser\nbuild_parser()")
    assert "wiremark.harness.worker_command" in modules
    assert top(modules, "locust", "gevent") == set() and "wiremark.harness.worker" not in modules


@pytest.mark.parametrize("command", ["report", "gate"])
def test_reports_import_nothing_of_the_live_side(command):
    modules = loaded_after(f"import wiremark.reports.{command}")
    live = top(modules, "wiremark.payloads", "wiremark.servers", "wiremark.harness", "grpc")
    assert live == set()
