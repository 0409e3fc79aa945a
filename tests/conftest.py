"""Shared fixtures: real servers on loopback (port 0), one process per transport, started
once per session; in-process reference runners; real clients (grpcio and httpx)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest

from wiremark.harness.clients import Client, connect
from wiremark.harness.launch import ServerProcess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(proxy, None)

# the quick scenario's transports (the OIP ones have tests/test_oip.py)
TRANSPORTS = ("grpc", "json", "msgpack", "tfs-grpc")
# Small limits so the over-limit cases are cheap to provoke.
MAX_BATCH = 64
MAX_BODY = 1_000_000
SERVER_ARGS = ("--max-batch", str(MAX_BATCH), "--max-body-bytes", str(MAX_BODY))


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, ServerProcess]]:
    procs = {t: ServerProcess(t, SERVER_ARGS) for t in TRANSPORTS}
    try:
        with ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(lambda p: p.start().wait_ready(), procs.values()))
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture(scope="session")
def reference() -> dict[str, object]:
    """The in-process runners every server must agree with."""
    from wiremark.servers import device, runner

    dev = device.configure("cpu")
    return {name: runner.build(name, dev) for name in runner.MODELS}


@pytest.fixture(scope="session")
def clients(servers: dict[str, ServerProcess]) -> Iterator[dict[str, Client]]:
    """The harness's own clients, one per transport, as the benchmark uses them."""
    opened = {t: connect(t, servers[t].address, timeout=60) for t in TRANSPORTS}
    yield opened
    for client in opened.values():
        client.close()


@pytest.fixture(scope="session")
def grpc_channel(servers: dict[str, ServerProcess]) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(servers["grpc"].address)
    grpc.channel_ready_future(channel).result(timeout=10)
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def http_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, trust_env=False) as client:
        yield client


def refused_address() -> str:
    """host:port of a socket bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"
