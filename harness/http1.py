"""One keep-alive HTTP/1.1 connection for the load users: a prepared request, a C parser.

The Locust HTTP users send the same request again and again, so its bytes are built once
(`prepare`) and each call is one `sendall` and the reads of the reply, parsed by httptools
(llhttp, the parser uvicorn uses on the server side). Nothing is built per call.

Why not geventhttpclient's `HTTPClient` (what Locust's FastHttpUser uses): per call it merges
header dictionaries, formats the request, checks its pool's socket with `select()` and parses
every reply header through Python callbacks into a header object. At concurrency 1 on the
iris model (JSON, load pinned to its own core, 4 alternating rounds of 4,000 calls) wrk's
p50 was 0.34-0.45 ms, `HTTPClient`'s 0.61-0.73 ms and this connection's 0.43-0.51 ms:
about 0.2 ms a call less of the client in every latency the harness reports.

Sockets are gevent's (the cell process is monkey-patched by Locust), so users wait for
replies concurrently. A connection the server closed, or one that failed, is dropped and
the next call opens a new one; a request that finds its kept-alive connection closed by
the server goes once more on a new one (`Connection.exchange`).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import httptools

from .tls import wrap


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the reply was complete."""


class Stale(ConnectionClosed):
    """The server closed the connection before sending any of the reply."""


def prepare(
    method: str, host: str, port: int, path: str, headers: dict[str, str], body: bytes
) -> bytes:
    """The request's bytes: request line, Host, the headers, Content-Length, the body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Reply:
    status: int
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header of that name (any case), or None."""
        key = name.lower().encode("latin-1")
        for k, v in self.raw_headers:
            if k.lower() == key:
                return v.decode("latin-1")
        return None


@dataclass
class _Message:
    """httptools' callback target: collects one reply."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False
    keep_alive: bool = False
    parser: httptools.HttpResponseParser | None = None

    def on_headers_complete(self) -> None:
        # llhttp answers this only while the message is being parsed, not after it
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class Connection:
    """A keep-alive connection to host:port; `exchange(request)` sends prepared bytes and
    returns the reply. Errors: OSError (refused, reset, timeout), ConnectionClosed, and
    httptools.HttpParserError for a malformed reply; the connection is dropped after any."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 30.0,
        block: int = 65536,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`timeout` bounds connecting only (see `connect`); `tls`: over TLS, the server
        verified by this context (its certificate must name `host`)."""
        self.host, self.port, self.timeout, self.block = host, port, timeout, block
        self.tls = tls
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:  # the handshake, within the connect timeout
            sock = wrap(sock, self.tls, self.host)
        # No timeout per read: under gevent each one arms a timer, about 30 us a call here.
        # A cell kills its users when its time is up, so a hung server cannot hang a cell;
        # its unanswered calls are missing replies (and dropped sends in open loop).
        sock.settimeout(None)
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def exchange(self, request: bytes) -> Reply:
        """Send `request` and read its reply. A kept-alive connection that the server had
        already closed (uvicorn closes one idle for 5 s) fails before any byte of a reply
        arrives: then the request goes once more, on a new connection, as browsers and
        geventhttpclient do. Its latency includes that retry, as a user's would."""
        if self.sock is not None:
            try:
                return self._exchange(request)
            except (Stale, ConnectionResetError, BrokenPipeError):
                pass
        self.connect()
        return self._exchange(request)

    def _exchange(self, request: bytes) -> Reply:
        assert self.sock is not None
        message = _Message()
        parser = message.parser = httptools.HttpResponseParser(message)
        received = False
        try:
            self.sock.sendall(request)
            while not message.complete:
                data = self.sock.recv(self.block)
                if not data:
                    if received:
                        raise ConnectionClosed("the server closed the connection mid-reply")
                    raise Stale("the server closed the connection before replying")
                received = True
                parser.feed_data(data)
        except BaseException:
            self.close()
            raise
        if not message.keep_alive:
            self.close()
        return Reply(parser.get_status_code(), message.headers, b"".join(message.chunks))
