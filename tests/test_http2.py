"""The load users' HTTP/2 gRPC client (`harness/http2.py`): against the real gRPC model
server (grpcio's C core) for predictions, errors, compression and a request larger than a
frame and a window; and against a scripted peer built on the `h2` library's state machine
for what grpcio does not do on demand: SETTINGS that shrink frames and windows, PING,
padding, CONTINUATION, replies larger than this side's window, GOAWAY, RST_STREAM and a
connection closed mid-reply."""

from __future__ import annotations

import gzip
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    RequestReceived,
    StreamEnded,
)
from h2.settings import SettingCodes, Settings

from wiremark.harness import http2
from wiremark.harness.http2 import Connection, ConnectionClosed, ProtocolError
from wiremark.payloads import samples, transport
from wiremark.payloads.contract import (
    GRPC_METHODS,
    MODEL_FAMILIES,
    SERVER_TIMING,
    Family,
    PixelEncoding,
    grpc_path,
)

CODEC = transport.get("grpc").codec


def connect(address: str) -> Connection:
    host, port = address.rsplit(":", 1)
    conn = Connection(host, int(port), timeout=10)
    conn.connect()
    return conn


def model_call(conn: Connection, model: str, batch: Any, gzip: bool = False) -> http2.Call:
    family = MODEL_FAMILIES.get(model, Family.TABULAR)
    body = CODEC.encode_request(family, model, batch, PixelEncoding.RAW)
    return conn.prepare(grpc_path(GRPC_METHODS[family]), body, gzip=gzip)


# -- against the real gRPC server ---------------------------------------------------------


def test_predictions_match_the_reference_on_one_connection(servers, reference):
    conn = connect(servers["grpc"].address)
    try:
        sock = conn.sock
        for n in (1, 7, 64):
            rows, _ = samples.iris_rows(n)
            call = model_call(conn, "iris", rows)
            for _ in range(3):  # the same prepared bytes on every stream
                reply = conn.exchange(call)
                assert reply.status == 0, reply.message
                got = CODEC.decode_reply(MODEL_FAMILIES["iris"], reply.body)
                want = reference["iris"].predict(rows)
                np.testing.assert_array_equal(got.class_ids, want.class_ids)
                np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-6)
                assert "infer;dur=" in (reply.header(SERVER_TIMING) or "")
        assert conn.sock is sock and conn.next_stream == 19  # nine calls, no reconnection
    finally:
        conn.close()


def test_a_request_larger_than_the_windows(servers, reference):
    # three 640-pixel photos: 230 KB, beyond the 64 KiB every HTTP/2 window starts with, so
    # the request goes as the server's WINDOW_UPDATEs allow
    photos = samples.face_images(sizes=(640,))
    conn = connect(servers["grpc"].address)
    try:
        call = model_call(conn, "face", photos)
        assert len(call.message) > 3 * http2.DEFAULT_WINDOW
        want = reference["face"].predict(photos)
        for _ in range(2):
            reply = conn.exchange(call)
            assert reply.status == 0, reply.message
            got = CODEC.decode_reply(MODEL_FAMILIES["face"], reply.body)
            assert [p.image_id for p in got] == [p.image_id for p in photos]
            assert [len(p.faces) for p in got] == [len(p.faces) for p in want]
    finally:
        conn.close()


def test_gzip_both_ways(servers, reference):
    rows, _ = samples.iris_rows(32)
    conn = connect(servers["grpc"].address)
    try:
        call = model_call(conn, "iris", rows, gzip=True)
        assert call.message[0] == 1  # the compressed flag of the length prefix
        reply = conn.exchange(call)
        assert reply.status == 0, reply.message
        got = CODEC.decode_reply(MODEL_FAMILIES["iris"], reply.body)  # decompressed already
        np.testing.assert_array_equal(got.class_ids, reference["iris"].predict(rows).class_ids)
    finally:
        conn.close()


def test_grpc_errors_are_statuses_and_the_connection_goes_on(servers):
    conn = connect(servers["grpc"].address)
    try:
        nan = np.array([[5.1, np.nan, 1.4, 0.2]], dtype=np.float32)
        bad = conn.exchange(model_call(conn, "iris", nan))
        assert bad.code == "INVALID_ARGUMENT" and "rows[0]" in bad.message
        missing = conn.exchange(conn.prepare("/wiremark.v1.Inference/NoSuchMethod", b""))
        assert missing.code == "UNIMPLEMENTED"
        unknown = conn.exchange(model_call(conn, "resnet", samples.iris_rows(1)[0]))
        assert unknown.code == "NOT_FOUND" and "resnet" in unknown.message
        good = conn.exchange(model_call(conn, "iris", samples.iris_rows(1)[0]))
        assert good.status == 0
    finally:
        conn.close()


# -- against a scripted h2 peer -------------------------------------------------------------


@dataclass
class Request:
    """What the peer saw of one stream."""

    conn: int  # which connection (0-based)
    stream: int
    headers: dict[bytes, bytes]
    body: bytes


@dataclass
class Peer:
    """A gRPC-shaped HTTP/2 server on loopback, one thread per connection; `script` answers
    each request (h2 connection, socket, request) and may return False to hang up."""

    script: Callable[[H2Connection, socket.socket, Request], bool | None]
    settings: dict[int, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    pings_acked: int = 0
    connections: int = 0
    threads: list[threading.Thread] = field(default_factory=list)


def grpc_reply(
    h2c: H2Connection,
    stream: int,
    message: bytes,
    status: int = 0,
    grpc_message: str = "",
    pad: int | None = None,
    trailers: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> None:
    h2c.send_headers(stream, [(":status", "200"), ("content-type", "application/grpc")])
    framed = b"\x00" + struct.pack(">L", len(message)) + message
    step = h2c.max_outbound_frame_size - (pad + 1 if pad else 0)
    for i in range(0, len(framed), step):
        h2c.send_data(stream, framed[i : i + step], pad_length=pad)
    tail = [("grpc-status", str(status)), *trailers]
    if grpc_message:
        tail.append(("grpc-message", grpc_message))
    h2c.send_headers(stream, tail, end_stream=True)


def echo(h2c: H2Connection, sock: socket.socket, request: Request) -> None:
    """Reply with the request's own message."""
    grpc_reply(h2c, request.stream, request.body[5:])


def _serve(peer: Peer, sock: socket.socket, index: int) -> None:
    h2c = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    h2c.local_settings = Settings(client=False, initial_values=peer.settings)
    h2c.initiate_connection()  # the server's first SETTINGS, with peer.settings
    sock.sendall(h2c.data_to_send())
    bodies: dict[int, bytearray] = {}
    heads: dict[int, dict[bytes, bytes]] = {}
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for event in h2c.receive_data(data):
                if isinstance(event, RequestReceived):
                    heads[event.stream_id] = dict(event.headers)
                    bodies[event.stream_id] = bytearray()
                elif isinstance(event, DataReceived):
                    bodies[event.stream_id] += event.data
                    h2c.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, PingAckReceived):
                    peer.pings_acked += 1
                elif isinstance(event, ConnectionTerminated):
                    return
                elif isinstance(event, StreamEnded):
                    sid = event.stream_id
                    request = Request(index, sid, heads[sid], bytes(bodies.pop(sid)))
                    peer.requests.append(request)
                    if peer.script(h2c, sock, request) is False:
                        sock.sendall(h2c.data_to_send())
                        return
            sock.sendall(h2c.data_to_send())
    except OSError:
        return
    finally:
        sock.close()


@contextmanager
def scripted(peer: Peer) -> Iterator[Connection]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            index = peer.connections
            peer.connections += 1
            thread = threading.Thread(target=_serve, args=(peer, sock, index), daemon=True)
            peer.threads.append(thread)
            thread.start()

    threading.Thread(target=accept, daemon=True).start()
    conn = Connection("127.0.0.1", port, timeout=10)
    try:
        yield conn
    finally:
        conn.close()
        listener.close()
        for thread in peer.threads:  # each has seen the client hang up: its counts are final
            thread.join(timeout=30)


def test_small_frames_small_windows_padding_and_ping():
    def script(h2c: H2Connection, sock: socket.socket, request: Request) -> None:
        h2c.ping(b"12345678")
        grpc_reply(h2c, request.stream, request.body[5:][::-1], pad=17)

    # a stream window far below the request: it goes as the peer's WINDOW_UPDATEs allow
    peer = Peer(script, {SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    message = bytes(range(256)) * 200  # 51 KB: 52 windows' worth, 4 frames' worth
    with scripted(peer) as conn:
        conn.connect()
        call = conn.prepare("/x.Y/Z", message)
        for _ in range(2):
            reply = conn.exchange(call)
            assert reply.status == 0 and reply.body == message[::-1]
    assert [r.body[5:] for r in peer.requests] == [message, message]
    h = peer.requests[0].headers
    assert h[b":path"] == b"/x.Y/Z" and h[b"content-type"] == b"application/grpc"
    assert h[b"te"] == b"trailers"
    assert peer.pings_acked == 2 and peer.connections == 1


def test_a_reply_larger_than_the_receive_window_and_a_long_header_block():
    size = http2.RECEIVE_WINDOW + 100_000  # this side must give the window back midway
    big = np.random.default_rng(0).bytes(size)
    long_value = "v" * 40_000  # a trailer block of several frames: HEADERS + CONTINUATION

    def script(h2c: H2Connection, sock: socket.socket, request: Request) -> None:
        stream = request.stream
        h2c.send_headers(stream, [(":status", "200"), ("content-type", "application/grpc")])
        framed = b"\x00" + struct.pack(">L", size) + big
        sent = 0
        while sent < len(framed):  # as the client's windows allow
            room = min(h2c.local_flow_control_window(stream), h2c.max_outbound_frame_size)
            if room <= 0:
                sock.sendall(h2c.data_to_send())
                for event in h2c.receive_data(sock.recv(65536)):
                    assert not isinstance(event, ConnectionTerminated)
                continue
            h2c.send_data(stream, framed[sent : sent + room])
            sent += room
        h2c.send_headers(stream, [("grpc-status", "0"), ("x-long", long_value)], end_stream=True)

    peer = Peer(script)
    with scripted(peer) as conn:
        conn.connect()
        reply = conn.exchange(conn.prepare("/x.Y/Z", b"hi"))
        assert reply.status == 0 and len(reply.body) == size and reply.body == big
        assert reply.header("x-long") == long_value
        assert conn.exchange(conn.prepare("/x.Y/Z", b"again")).body == big  # windows still right


def test_grpc_status_and_percent_encoded_message():
    def script(h2c: H2Connection, sock: socket.socket, request: Request) -> None:
        grpc_reply(h2c, request.stream, b"", status=3, grpc_message="rows[0]: 100%25 bad%0A")

    with scripted(Peer(script)) as conn:
        conn.connect()
        reply = conn.exchange(conn.prepare("/x.Y/Z", b"m"))
    assert reply.code == "INVALID_ARGUMENT" and reply.message == "rows[0]: 100% bad\n"
    assert reply.body == b""


def test_goaway_below_the_stream_sends_it_again_on_a_new_connection():
    def script(h2c: H2Connection, sock: socket.socket, request: Request) -> bool | None:
        if request.conn == 0 and request.stream == 3:
            h2c.close_connection(ErrorCodes.NO_ERROR, last_stream_id=1)
            return False
        echo(h2c, sock, request)
        return None

    peer = Peer(script)
    with scripted(peer) as conn:
        conn.connect()
        call = conn.prepare("/x.Y/Z", b"payload")
        assert conn.exchange(call).body == b"payload"  # stream 1 on connection 0
        assert conn.exchange(call).body == b"payload"  # stream 3 refused, sent again
        assert conn.exchange(call).body == b"payload"  # stream 3 on connection 1
    assert [(r.conn, r.stream) for r in peer.requests] == [(0, 1), (0, 3), (1, 1), (1, 3)]


def test_graceful_goaway_finishes_the_call_then_reconnects():
    def script(h2c: H2Connection, sock: socket.socket, request: Request) -> None:
        if request.conn == 0:  # raw: h2 sends nothing more once it has sent a GOAWAY
            goaway = struct.pack(">LL", request.stream, ErrorCodes.NO_ERROR)
            sock.sendall(http2.frame(http2.GOAWAY, 0, 0, goaway))
        echo(h2c, sock, request)

    peer = Peer(script)
    with scripted(peer) as conn:
        conn.connect()
        call = conn.prepare("/x.Y/Z", b"p")
        assert conn.exchange(call).body == b"p"
        assert conn.sock is None  # not reused after the last call the server processes
        assert conn.exchange(call).body == b"p"
    assert [(r.conn, r.stream) for r in peer.requests] == [(0, 1), (1, 1)]


def test_refused_stream_goes_again_and_another_reset_is_an_error():
    def script(h2c: H2Connection, sock: socket.socket, request: Request) -> None:
        if request.body[5:] == b"refuse" and request.conn == 0:
            h2c.reset_stream(request.stream, ErrorCodes.REFUSED_STREAM)
        elif request.body[5:] == b"reset":
            h2c.reset_stream(request.stream, ErrorCodes.INTERNAL_ERROR)
        else:
            echo(h2c, sock, request)

    peer = Peer(script)
    with scripted(peer) as conn:
        conn.connect()
        assert conn.exchange(conn.prepare("/x.Y/Z", b"refuse")).body == b"refuse"
        with pytest.raises(ProtocolError, match="INTERNAL_ERROR"):
            conn.exchange(conn.prepare("/x.Y/Z", b"reset"))
        assert conn.sock is None  # dropped after the error
        assert conn.exchange(conn.prepare("/x.Y/Z", b"fine")).body == b"fine"
    assert peer.connections == 3


def test_a_reply_cut_short_is_an_error_and_the_next_call_reconnects():
    def script(h2c: H2Connection, sock: socket.socket, request: Request) -> bool | None:
        if request.conn == 0:
            h2c.send_headers(request.stream, [(":status", "200")])
            h2c.send_data(request.stream, b"\x00\x00\x00\x00\x10half")
            return False
        echo(h2c, sock, request)
        return None

    peer = Peer(script)
    with scripted(peer) as conn:
        conn.connect()
        call = conn.prepare("/x.Y/Z", b"p")
        with pytest.raises(ConnectionClosed, match="mid-reply"):
            conn.exchange(call)
        assert conn.exchange(call).body == b"p"


def test_http_errors_and_broken_framing_are_protocol_errors():
    def script(h2c: H2Connection, sock: socket.socket, request: Request) -> None:
        body = request.body[5:]
        if body == b"503":
            h2c.send_headers(request.stream, [(":status", "503")], end_stream=True)
        elif body == b"short":
            h2c.send_headers(request.stream, [(":status", "200")])
            h2c.send_data(request.stream, b"\x00\x00\x00\x00\x09abc")  # says 9, holds 3
            h2c.send_headers(request.stream, [("grpc-status", "0")], end_stream=True)
        elif body == b"gzip":
            h2c.send_headers(request.stream, [(":status", "200"), ("grpc-encoding", "gzip")])
            packed = gzip.compress(b"unpacked")
            h2c.send_data(request.stream, b"\x01" + struct.pack(">L", len(packed)) + packed)
            h2c.send_headers(request.stream, [("grpc-status", "0")], end_stream=True)
        else:
            h2c.send_headers(request.stream, [(":status", "200")])
            h2c.send_headers(request.stream, [("x", "no status")], end_stream=True)

    with scripted(Peer(script)) as conn:
        conn.connect()
        with pytest.raises(ProtocolError, match="503"):
            conn.exchange(conn.prepare("/x.Y/Z", b"503"))
        with pytest.raises(ProtocolError, match="does not match its prefix"):
            conn.exchange(conn.prepare("/x.Y/Z", b"short"))
        assert conn.exchange(conn.prepare("/x.Y/Z", b"gzip")).body == b"unpacked"
        with pytest.raises(ProtocolError, match="grpc-status"):
            conn.exchange(conn.prepare("/x.Y/Z", b"none"))


def test_nobody_listening_is_an_oserror():
    from .conftest import refused_address

    host, port = refused_address().rsplit(":", 1)
    with pytest.raises(OSError):
        Connection(host, int(port), timeout=2).connect()


def test_remembered_header_blocks_decode_as_hpack_does():
    """Blocks are remembered only while hpack's dynamic table stays the same: over a stream
    of blocks that index, evict (a small table) and repeat, every block decodes to what a
    plain hpack decoder makes of it."""
    import random

    import hpack

    rng = random.Random(7)
    encoder, plain = hpack.Encoder(), hpack.Decoder()
    encoder.header_table_size = 256  # a table of a few entries: insertions evict
    conn = Connection("127.0.0.1", 1)
    names = [f"x-{i}" for i in range(6)]
    hits = 0
    for _ in range(2000):
        fields = [(":status", "200"), ("content-type", "application/grpc")]
        fields += [(n, str(rng.randrange(3))) for n in rng.sample(names, rng.randrange(3))]
        block = encoder.encode(fields)
        hits += block in conn.known
        conn._header_stream = 0
        got = conn.known.get(block) or conn._decode(block)
        assert got == plain.decode(block, raw=True)
    assert hits > 100  # the cache did serve repeated blocks


def test_a_block_that_changes_the_table_is_not_remembered():
    import hpack

    encoder = hpack.Encoder()
    conn = Connection("127.0.0.1", 1)
    first = encoder.encode([("grpc-status", "0")])  # a literal, indexed: the table grows
    assert conn._decode(first) == [(b"grpc-status", b"0")] and first not in conn.known
    again = encoder.encode([("grpc-status", "0")])  # now one index byte: the table stays
    assert len(again) == 1 and conn._decode(again) == [(b"grpc-status", b"0")]
    assert again in conn.known
    conn._decode(encoder.encode([("x-new", "1")]))  # the table changes: all forgotten
    assert not conn.known
