"""Cells on Locust's master/worker runners, with real processes and sockets: workers that
connect from elsewhere (`wiremark worker --master`), on loopback and from another network
namespace; a worker killed mid-cell; workers that never come."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from wiremark.harness.launch import ServerProcess
from wiremark.reports import records

from .cli import wiremark
from .conftest import SERVER_ARGS

# Two cells (one per transport), no wire pass: a worker that holds a connection to the
# server is past its plan and loading
TWO_CELLS = """
[scenario]
name = "workers"
models = ["iris"]
transports = ["json", "msgpack"]
concurrency = [4]
rate = []
duration_s = {duration}
warmup_s = 0.5
min_requests = 20
wire_requests = 0
sample = 3
"""


def scenario(tmp: Path, duration: float = 1.5) -> str:
    path = tmp / "workers.toml"
    path.write_text(TWO_CELLS.format(duration=duration))
    return str(path)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def remote_workers(master: str, count: int, prefix: tuple[str, ...] = ()) -> Iterator[list]:
    """`count` `wiremark worker --master` processes (after `prefix`, e.g. ip netns exec),
    stopped at the end."""
    argv = [*prefix, sys.executable, "-m", "wiremark", "worker", "--master", master]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return wiremark("bench", "--no-report", *args, timeout=400)


def cells_by_transport(out: Path) -> dict[str, dict]:
    return {c["transport"]: c for c in records.load(out).cells}


def test_remote_workers_on_loopback_load_every_cell_of_a_run(servers, tmp_path):
    """Two `wiremark worker` processes serve both cells of a run: each cell's master binds
    the same address in turn, the workers connect again for the next; each cell's records
    hold both workers' requests, and each worker's host, cores and versions."""
    master = f"127.0.0.1:{free_port()}"
    with remote_workers(master, 2):
        result = bench(
            *("--scenario", scenario(tmp_path), "--out", str(tmp_path / "o")),
            *("--target", f"json={servers['json'].address}"),
            *("--target", f"msgpack={servers['msgpack'].address}"),
            *("--expect-workers", "2", "--master-bind", master),
        )
    assert result.returncode == 0, result.stderr[-3000:]
    for transport, cell in cells_by_transport(tmp_path / "o").items():
        assert cell["valid"], (transport, cell["invalid_reasons"])
        assert cell["workers"] == cell["workers_planned"] == 2 and cell["processes"] == 0
        per = cell["load_workers"]
        assert [w["index"] for w in per] == [0, 1] and all(w["requests"] > 0 for w in per)
        assert sum(w["requests"] for w in per) == cell["requests"]
        assert {w["host"] for w in per} == {socket.gethostname()}
        assert all(w["versions"]["locust"] and w["cores"] >= 1 for w in per)
        assert cell["sampled"] == 3 and cell["sample_mismatches"] == 0


def test_a_worker_killed_mid_cell_leaves_the_cell_to_the_others_and_the_run_goes_on(
    servers, tmp_path
):
    """SIGKILL one of two local workers of the JSON cell once it is loading the server: the
    cell finishes on the other, says so and is invalid; the next cell runs on two again."""
    port = int(servers["json"].address.rsplit(":", 1)[1])
    killed: list[int] = []

    def loading_worker() -> psutil.Process | None:
        for proc in psutil.process_iter(["cmdline"]):
            if "wiremark.harness.worker" not in " ".join(proc.info["cmdline"] or ()):
                continue
            with contextlib.suppress(psutil.Error):
                if any(c.raddr and c.raddr.port == port for c in proc.net_connections()):
                    return proc
        return None

    def killer() -> None:
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            proc = loading_worker()
            if proc is not None:
                proc.send_signal(signal.SIGKILL)
                killed.append(proc.pid)
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = bench(
        *("--scenario", scenario(tmp_path, duration=6.0), "--out", str(tmp_path / "o")),
        *("--target", f"json={servers['json'].address}"),
        *("--target", f"msgpack={servers['msgpack'].address}"),
        *("--load-processes", "2"),
    )
    thread.join(timeout=5)
    assert killed, "no worker of the JSON cell was seen loading"
    assert result.returncode == 0, result.stderr[-3000:]
    cells = cells_by_transport(tmp_path / "o")
    lost = cells["json"]
    assert (lost["workers"], lost["workers_planned"]) == (1, 2)
    assert not lost["valid"] and lost["requests"] > 0
    assert any("1 of 2 load workers lost mid-cell" in r for r in lost["invalid_reasons"])
    after = cells["msgpack"]
    assert after["valid"] and (after["workers"], after["workers_planned"]) == (2, 2)


def test_workers_that_never_connect_stop_the_run_with_one_line(servers, tmp_path):
    master = f"127.0.0.1:{free_port()}"
    result = bench(
        *("--scenario", scenario(tmp_path), "--out", str(tmp_path / "o")),
        *("--target", f"json={servers['json'].address}"),
        *("--expect-workers", "2", "--master-bind", master, "--worker-timeout", "2"),
    )
    assert result.returncode == 1
    line = f"wiremark: error: 0 of 2 load workers connected to {master} within 2 s"
    assert line in result.stderr, result.stderr[-2000:]
    assert f"wiremark worker --master {master}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plan_that_arrives_with_the_ack_is_not_lost():
    """Locust acks a worker the moment it says client_ready, and the cell's master sends
    the plan as soon as it counts that worker. A worker not scheduled in between reads both
    in one go; before its handlers were registered ahead of connecting, it dropped the plan
    as an unknown message and the cell failed with "never got ready" (CI, a busy machine).
    The eager master makes that order certain by stopping the worker meanwhile."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("eager_master.py"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(r["index"], r["error"]) for r in answer["ready"]] == [(0, "")], answer["stderr"]
    assert "Unknown message type" not in answer["stderr"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--expect-workers", "1"), "servers they can reach"),
        (("--target", "json=127.0.0.1:9", "--expect-workers", "1"), "--master-bind HOST:PORT"),
        (("--master-bind", "nowhere"), "--master-bind: expected HOST:PORT"),
        (("--load-processes", "0"), "--load-processes 0 needs --expect-workers"),
        (("--load-processes", "-1"), "--load-processes must be 0 or more"),
    ],
)
def test_worker_options_that_do_not_fit_are_one_line_errors(args, message):
    result = wiremark("bench", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_given_a_bad_master_address_says_so():
    result = wiremark("worker", "--master", "no-port-here")
    assert result.returncode == 2 and "expected HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------ another host, as a namespace

SUBNET = "10.77.93"  # the namespaces' addresses: root .1 (the bridge), servers .2, load .3
BRIDGE, SERVERS, LOAD = "wmbr93", "wm-servers", "wm-load"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def namespaces() -> Iterator[None]:
    """Two network namespaces, servers and load, on a bridge with the root namespace
    (which runs the master): three hosts on one subnet. Torn down whatever happens."""
    try:
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        for i, ns in ((2, SERVERS), (3, LOAD)):
            ip("netns", "add", ns)
            ip("link", "add", f"{ns}-br", "type", "veth", "peer", "name", f"{ns}-if")
            ip("link", "set", f"{ns}-if", "netns", ns)
            ip("link", "set", f"{ns}-br", "master", BRIDGE)
            ip("link", "set", f"{ns}-br", "up")
            ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", f"{ns}-if")
            ip("-n", ns, "link", "set", f"{ns}-if", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in (SERVERS, LOAD):
            subprocess.run(["ip", "link", "del", f"{ns}-br"], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def namespaces_problem() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no ip command (Debian package iproute2)"
    try:
        ip("netns", "add", "wm-probe")
    except subprocess.CalledProcessError as exc:
        return f"cannot make a network namespace: {exc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", "wm-probe"], capture_output=True)
    return None


class NamespacedServer(ServerProcess):
    """`wiremark serve` inside a network namespace."""

    namespace: str = SERVERS

    def entry(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *super().entry()]


def test_servers_workers_and_master_on_three_hosts(tmp_path):
    """Servers in one namespace, two workers in another, the master in the root namespace:
    every cell completes, its records hold the requests of both workers, and every byte of
    load crossed from the load namespace to the servers' address."""
    problem = namespaces_problem()
    if problem:
        pytest.skip(problem)
    with namespaces():
        servers = [
            NamespacedServer(t, SERVER_ARGS, host=f"{SUBNET}.2") for t in ("json", "msgpack")
        ]
        try:
            for server in servers:
                server.start()
            for server in servers:
                server.wait_ready()
            master = f"{SUBNET}.1:{free_port(f'{SUBNET}.1')}"
            with remote_workers(master, 2, ("ip", "netns", "exec", LOAD)):
                result = bench(
                    *("--scenario", scenario(tmp_path), "--out", str(tmp_path / "o")),
                    *(a for s in servers for a in ("--target", f"{s.transport}={s.address}")),
                    *("--expect-workers", "2", "--master-bind", master),
                )
        finally:
            for server in servers:
                server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    cells = cells_by_transport(tmp_path / "o")
    assert set(cells) == {"json", "msgpack"}
    for cell in cells.values():
        assert cell["valid"], cell["invalid_reasons"]
        per = cell["load_workers"]
        assert len(per) == cell["workers_planned"] == 2 and all(w["requests"] > 0 for w in per)
        assert sum(w["requests"] for w in per) == cell["requests"]
        assert cell["server_cpu_ms"] is None  # a --target: its CPU is not this host's to read
