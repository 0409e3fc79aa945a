"""The load users' HTTP/1.1 connection (`harness/http1.py`) against real servers: the JSON
model server for keep-alive and error replies, and small socket servers for a server that
closes after each reply and one that hangs up mid-reply."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest

from wiremark.harness.http1 import Connection, ConnectionClosed, prepare
from wiremark.payloads.contract import predict_path

ROW = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


def json_request(address: str, body: bytes) -> tuple[Connection, bytes]:
    host, port = address.rsplit(":", 1)
    headers = {"Content-Type": "application/json"}
    request = prepare("POST", host, int(port), predict_path("iris"), headers, body)
    return Connection(host, int(port)), request


def test_prepared_request_bytes():
    request = prepare("POST", "127.0.0.1", 8000, "/x", {"Content-Type": "a/b"}, b"body")
    assert request == (
        b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: a/b\r\n"
        b"Content-Length: 4\r\n\r\nbody"
    )


def test_keep_alive_reuses_one_connection(servers):
    conn, request = json_request(servers["json"].address, ROW)
    try:
        first = conn.exchange(request)
        sock = conn.sock
        replies = [conn.exchange(request) for _ in range(20)]
        assert sock is not None and conn.sock is sock  # never reconnected
    finally:
        conn.close()
    for reply in (first, *replies):
        assert reply.status == 200
        assert orjson.loads(reply.body)["predictions"][0]["class_id"] == 0
        timing = reply.header("Server-Timing")
        assert timing is not None and "infer;dur=" in timing
    assert first.header("no-such-header") is None


def test_error_reply_is_returned_and_the_connection_goes_on(servers):
    conn, bad = json_request(servers["json"].address, b'{"instances": [[1, 2]]}')
    _, good = json_request(servers["json"].address, ROW)
    try:
        reply = conn.exchange(bad)
        assert reply.status in (400, 422)
        assert orjson.loads(reply.body)["field"] == "instances[0]"
        assert conn.exchange(good).status == 200
    finally:
        conn.close()


@contextmanager
def socket_server(reply: bytes) -> Iterator[tuple[int, list[int]]]:
    """A loopback server that reads each connection's request head, sends `reply` and closes
    the connection; yields its port and a list that grows by one per connection accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()


@pytest.mark.parametrize(
    "reply",
    [
        # the server says it closes after each reply
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        # keep-alive replies, but the server hangs up after each, as uvicorn does after 5 s
        # idle: the next request finds the connection closed and goes again on a new one
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "stale-keep-alive"],
)
def test_a_connection_the_server_closed_is_replaced(reply):
    with socket_server(reply) as (port, accepted):
        conn = Connection("127.0.0.1", port, timeout=5)
        request = prepare("POST", "127.0.0.1", port, "/", {}, b"")
        bodies = [conn.exchange(request).body for _ in range(3)]
        conn.close()
    assert bodies == [b"ok"] * 3
    assert len(accepted) == 3


def test_a_reply_cut_short_raises_and_drops_the_connection():
    cut_short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"
    with socket_server(cut_short) as (port, accepted):
        conn = Connection("127.0.0.1", port, timeout=5)
        with pytest.raises(ConnectionClosed, match="closed the connection mid-reply"):
            conn.exchange(prepare("POST", "127.0.0.1", port, "/", {}, b""))
        assert conn.sock is None
    assert len(accepted) == 1  # part of a reply came: never retried


def test_refused_connection_is_an_oserror():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    conn = Connection("127.0.0.1", port, timeout=5)
    with pytest.raises(OSError):
        conn.exchange(prepare("POST", "127.0.0.1", port, "/", {}, b""))
