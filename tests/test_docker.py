"""No Docker engine runs here, so the docker/ files are checked by what can run: every
command they give is a valid `wiremark` command line, and every path they copy exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from wiremark.cli import build_parser
from wiremark.harness import scenario as scenarios
from wiremark.payloads import transport as registry

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))


def docker_commands(path: Path) -> list[list[str]]:
    text = path.read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    assert entry == ["wiremark"]
    commands = [json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))]
    # the usage lines in the header comments: `docker run ... IMAGE serve ...`
    runs = re.findall(r"#\s+docker run .* wiremark(?::\S+)? (serve .*)", text)
    commands += [line.split() for line in runs]
    assert len(commands) == 2
    return commands


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_commands_parse(path):
    for argv in docker_commands(path):
        args = build_parser().parse_args(argv)
        assert args.command == "serve" and args.host == "0.0.0.0"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_what_exists(path):
    for sources in re.findall(r"^COPY (.+) \S+$", path.read_text(), re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source


def test_compose_commands_parse():
    text = (ROOT / "docker" / "compose.yaml").read_text()
    commands = [
        build_parser().parse_args(json.loads(c)) for c in re.findall(r"command: (\[.*\])", text)
    ]
    serves = [a for a in commands if a.command == "serve"]
    assert {a.transport for a in serves} == set(registry.names())  # every one but peers
    benches = [a for a in commands if a.command == "bench"]
    assert len(benches) == 2  # on one load container, and as the master of the workers
    # the load generator measures the quick scenario's servers, by service names and ports
    quick = scenarios.load("quick").transports
    for bench in benches:
        assert sorted(bench.target) == sorted(
            (a.transport, f"{a.transport}:{a.port}") for a in serves if a.transport in quick
        )
    # the workers dial the master's service at the port it binds, and it waits for them
    (master,) = [a for a in benches if a.expect_workers]
    (worker,) = [a for a in commands if a.command == "worker"]
    assert master.master_bind == "0.0.0.0:5557" and worker.master == "master:5557"
    assert f"--scale worker={master.expect_workers}" in text
