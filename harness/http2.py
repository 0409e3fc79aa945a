"""One HTTP/2 connection for gRPC unary calls, for the load users: prepared frames, a small
frame reader, header blocks decoded by `hpack`.

The Locust gRPC users send the same call again and again, so its bytes are built once
(`Connection.prepare`): a HEADERS block of never-indexed literals (and static-table
indexes), which leaves HPACK's dynamic table alone and so stays byte-identical on every
stream, then the DATA frame with gRPC's 5-byte length prefix. A call patches the stream id
into both frame headers and sends them in one `sendall`.

Replies are read frame by frame: the 9-byte frame header is parsed with `struct`, and every
header block the server sends goes through one `hpack.Decoder`, whose dynamic table must see
them all; a block that left the table unchanged (grpcio's response headers after the first
stream: three index bytes) is remembered, and decoded again only once the table changes.
The rest of the protocol a unary client needs is here too:

- SETTINGS are acknowledged, and the server's MAX_FRAME_SIZE and INITIAL_WINDOW_SIZE are
  honoured; PING is answered;
- flow control both ways: a request larger than the server's windows goes out as the
  server's WINDOW_UPDATEs allow, and what this side receives is given back in WINDOW_UPDATEs
  once half of a window is used;
- a message that spans several DATA frames is reassembled, padding stripped;
- GOAWAY: a call on a stream the server did not process goes once more on a new
  connection, and the connection is not reused after the last call it did process;
- RST_STREAM, an HTTP status other than 200 and a connection closed mid-reply are errors;
- `grpc-encoding: gzip` both ways when asked for (`prepare(..., gzip=True)`);
- `grpc-status` and `grpc-message` (percent-decoded) are the reply's status.

Why not grpcio in the load users: under gevent it cost 2.1-2.7 times this connection's CPU
per request in a cell here (iris and MNIST, 1 and 8 users: 364-521 us against 150-193 us),
and saturated the load generator's core before the iris server did, so the gRPC cells
measured the client. It stays available as the `library` client. Why not the `h2`
library's state machine: it costs about as much as grpcio per call; the tests use it as an
independent peer.

One call at a time per connection (each Locust user owns one connection, as each HTTP/1.1
user does). Sockets are gevent's in a cell process, so users wait concurrently. As in
`http1.py`, no timeout per read: a cell kills its users when its time is up.
"""

from __future__ import annotations

import gzip as gzip_module
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, cast
from urllib.parse import unquote

import hpack

from .tls import wrap

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH = 0x1, 0x2
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x4, 0x5

DEFAULT_WINDOW = 65_535  # RFC 9113: every window starts here
DEFAULT_FRAME = 16_384  # ... and the largest frame a peer takes until it says otherwise
RECEIVE_WINDOW = 1 << 24  # what this side advertises, per stream and for the connection
MAX_STREAM_ID = (1 << 31) - 1
KNOWN_BLOCKS = 64  # header blocks remembered while hpack's dynamic table stays the same

FRAME_HEADER = struct.Struct(">HBBBL")  # length (24 bits, as 16 + 8), type, flags, stream
U32 = struct.Struct(">L")

# RFC 9113 section 7, and gRPC's status codes, by number
ERROR_CODES = (
    *("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT"),
    *("STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR"),
    *("CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"),
)
GRPC_CODES = (
    *("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND"),
    *("ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"),
    *("ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"),
    "UNAUTHENTICATED",
)


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return FRAME_HEADER.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload


def error_name(code: int) -> str:
    return ERROR_CODES[code] if code < len(ERROR_CODES) else f"error 0x{code:x}"


def grpc_code_name(status: int) -> str:
    return GRPC_CODES[status] if 0 <= status < len(GRPC_CODES) else f"status {status}"


class ProtocolError(ConnectionError):
    """The server broke HTTP/2 or gRPC framing, or reset the stream."""


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the reply was complete."""


class Unprocessed(ConnectionClosed):
    """The call was not processed (GOAWAY below its stream, REFUSED_STREAM, or the server
    closed a kept-alive connection before any of the reply): it can go again."""


@dataclass
class Reply:
    status: int  # grpc-status: 0 is OK
    message: str  # grpc-message, percent-decoded
    body: bytes  # the reply message (decompressed), without its 5-byte prefix
    headers: list[tuple[bytes, bytes]]  # the response headers, then the trailers

    def header(self, name: str) -> str | None:
        """The first header or trailer of that (lower-case) name, or None."""
        key = name.encode("latin-1")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    @property
    def code(self) -> str:
        return grpc_code_name(self.status)


@dataclass
class Call:
    """One prepared unary call: its header block and its length-prefixed message."""

    block: bytes
    message: bytes
    wire: bytearray  # HEADERS + DATA, for a message that fits a frame and the windows
    data_at: int  # where the DATA frame's header starts in `wire`


class _Stream:
    __slots__ = ("data", "done", "headers", "id", "send_window", "unacked")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.unacked = 0  # received DATA bytes not yet given back
        self.headers: list[tuple[bytes, bytes]] = []
        self.data: list[bytes] = []
        self.done = False


class Connection:
    """An HTTP/2 connection to host:port for gRPC unary calls, one at a time.

    `prepare(path, message)` builds a call once; `exchange(call)` sends it and returns the
    `Reply` (a gRPC error is a Reply with its status, not an exception). Errors: OSError
    (refused, reset), ConnectionClosed, ProtocolError, hpack's errors for a bad header
    block; the connection is dropped after any.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 30.0,
        block: int = 65536,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`timeout` bounds connecting and the server's first SETTINGS; `tls`: over TLS,
        the server verified by this context, which must offer ALPN "h2" (gRPC insists)."""
        self.host, self.port, self.timeout, self.block = host, port, timeout, block
        self.tls = tls
        self.authority = f"{host}:{port}"
        self.sock: socket.socket | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.buf = b""
        self.pos = 0
        self.decoder = hpack.Decoder()
        self.known: dict[bytes, list[tuple[bytes, bytes]]] = {}  # see _decode
        self.next_stream = 1
        self.max_frame = DEFAULT_FRAME
        self.peer_initial_window = DEFAULT_WINDOW
        self.send_window = DEFAULT_WINDOW  # the connection's, towards the server
        self.unacked = 0  # DATA received on the connection, not yet given back
        self.goaway: int | None = None  # the last stream the server will process
        self.settled = False  # the server's first SETTINGS arrived
        self.stream: _Stream | None = None
        self._header_block: list[bytes] | None = None  # a block awaiting CONTINUATION
        self._header_flags = 0
        self._header_stream = 0

    # -- the connection -------------------------------------------------------------------

    def connect(self) -> None:
        self.close()
        self._reset_state()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:  # the handshake, within the connect timeout
            sock = wrap(sock, self.tls, self.host)
            if sock.selected_alpn_protocol() != "h2":
                sock.close()
                raise ProtocolError(
                    f"{self.authority}: TLS without ALPN h2 "
                    f"(the server chose {sock.selected_alpn_protocol()!r})"
                )
        self.sock = sock
        settings = struct.pack(
            ">HLHLHL",
            SETTINGS_ENABLE_PUSH,
            0,
            SETTINGS_INITIAL_WINDOW_SIZE,
            RECEIVE_WINDOW,
            SETTINGS_HEADER_TABLE_SIZE,
            4096,
        )
        grow = U32.pack(RECEIVE_WINDOW - DEFAULT_WINDOW)
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, grow))
        try:
            while not self.settled:  # the server's SETTINGS come first (RFC 9113 3.4)
                self._read_frame()
        except BaseException:
            self.close()
            raise
        sock.settimeout(None)  # no timer per read under gevent (see http1.py)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- calls ----------------------------------------------------------------------------

    def prepare(self, path: str, message: bytes, gzip: bool = False) -> Call:
        """A unary call to `path` (e.g. "/wiremark.v1.Inference/Classify") sending the
        serialized `message`, gzip-compressed when `gzip`."""
        headers = [
            (":method", "POST"),
            (":scheme", "https" if self.tls is not None else "http"),
            (":path", path),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if gzip:
            message = gzip_module.compress(message, compresslevel=6)
            headers += [("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")]
        # Never-indexed literals and static indexes only: the same bytes on every stream.
        encoder = hpack.Encoder()
        block = encoder.encode(
            [hpack.NeverIndexedHeaderTuple(k, v) for k, v in headers], huffman=False
        )
        prefixed = (b"\x01" if gzip else b"\x00") + U32.pack(len(message)) + message
        head = frame(HEADERS, END_HEADERS, 0, block)
        wire = bytearray(head + frame(DATA, END_STREAM, 0, prefixed))
        return Call(block, prefixed, wire, len(head))

    def exchange(self, call: Call) -> Reply:
        """Send `call` and read its reply. A call the server did not process (GOAWAY below
        its stream, REFUSED_STREAM, or a kept-alive connection closed before the reply) goes
        once more, on a new connection. Its latency includes that retry, as a user's would."""
        if self.sock is not None and self.goaway is None and self.next_stream < MAX_STREAM_ID:
            try:
                return self._exchange(call)
            except (Unprocessed, ConnectionResetError, BrokenPipeError):
                pass
        self.connect()
        return self._exchange(call)

    def _exchange(self, call: Call) -> Reply:
        assert self.sock is not None
        stream = self.stream = _Stream(self.next_stream, self.peer_initial_window)
        self.next_stream += 2
        try:
            self._send(call, stream)
            while not stream.done:
                self._read_frame()
            reply = self._reply(stream)
        except BaseException:
            self.close()
            raise
        finally:
            self.stream = None
        if self.goaway is not None:
            self.close()
        return reply

    def _send(self, call: Call, stream: _Stream) -> None:
        assert self.sock is not None
        size = len(call.message)
        if size <= min(self.max_frame, self.send_window, stream.send_window):
            wire = call.wire  # the common case: both frames at once, stream id patched in
            U32.pack_into(wire, 5, stream.id)
            U32.pack_into(wire, call.data_at + 5, stream.id)
            self.sock.sendall(wire)
            self.send_window -= size
            stream.send_window -= size
            return
        self.sock.sendall(frame(HEADERS, END_HEADERS, stream.id, call.block))
        view = memoryview(call.message)
        sent = 0
        while sent < size:
            room = min(self.max_frame, self.send_window, stream.send_window, size - sent)
            if room <= 0:  # wait for the server's WINDOW_UPDATE (or its early answer)
                self._read_frame()
                if stream.done:
                    return
                continue
            last = sent + room == size
            chunk = bytes(view[sent : sent + room])
            self.sock.sendall(frame(DATA, END_STREAM if last else 0, stream.id, chunk))
            sent += room
            self.send_window -= room
            stream.send_window -= room

    def _reply(self, stream: _Stream) -> Reply:
        headers = stream.headers
        fields = dict(headers)
        status_line = fields.get(b":status")
        if status_line != b"200":
            raise ProtocolError(f"HTTP status {status_line!r} from a gRPC server")
        status = fields.get(b"grpc-status")
        if status is None:
            raise ProtocolError("the reply ended without a grpc-status trailer")
        message = unquote(fields.get(b"grpc-message", b"").decode("utf-8", "replace"))
        data = b"".join(stream.data)
        body = b""
        if data:
            if len(data) < 5 or len(data) != 5 + U32.unpack_from(data, 1)[0]:
                size = len(data)
                raise ProtocolError(f"a gRPC message of {size} bytes does not match its prefix")
            body = data[5:]
            if data[0] == 1:
                if fields.get(b"grpc-encoding") != b"gzip":
                    raise ProtocolError("a compressed message without grpc-encoding: gzip")
                body = gzip_module.decompress(body)
        return Reply(int(status), message, body, headers)

    # -- frames ---------------------------------------------------------------------------

    def _fill(self, need: int) -> None:
        """Read until `need` bytes are buffered past `pos`."""
        assert self.sock is not None
        while len(self.buf) - self.pos < need:
            data = self.sock.recv(self.block)
            if not data:
                stream = self.stream
                if stream is not None and not stream.headers and not stream.data:
                    raise Unprocessed("the server closed the connection before replying")
                raise ConnectionClosed("the server closed the connection mid-reply")
            self.buf = self.buf[self.pos :] + data if self.pos < len(self.buf) else data
            self.pos = 0

    def _read_frame(self) -> None:
        self._fill(9)
        high, low, kind, flags, stream_id = FRAME_HEADER.unpack_from(self.buf, self.pos)
        length = high << 8 | low
        stream_id &= MAX_STREAM_ID
        self._fill(9 + length)
        start = self.pos + 9
        payload = self.buf[start : start + length]
        self.pos = start + length
        if self._header_block is not None and kind != CONTINUATION:
            raise ProtocolError("a header block was interrupted by another frame")
        handler = self.HANDLERS.get(kind)
        if handler is not None:  # unknown frame types are ignored (RFC 9113 4.1)
            handler(self, flags, stream_id, payload)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self.unacked += size
        updates = b""
        if self.unacked >= RECEIVE_WINDOW // 2:
            updates += frame(WINDOW_UPDATE, 0, 0, U32.pack(self.unacked))
            self.unacked = 0
        stream = self._own(stream_id)
        if stream is not None:
            if flags & PADDED:
                payload = payload[1 : size - payload[0]]
            stream.data.append(payload)
            stream.unacked += size
            if stream.unacked >= RECEIVE_WINDOW // 2 and not flags & END_STREAM:
                updates += frame(WINDOW_UPDATE, 0, stream_id, U32.pack(stream.unacked))
                stream.unacked = 0
            if flags & END_STREAM:
                stream.done = True
        if updates:
            assert self.sock is not None
            self.sock.sendall(updates)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        self._header_stream, self._header_flags = stream_id, flags
        if flags & END_HEADERS:
            self._headers_done(payload)
        else:
            self._header_block = [payload]

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._header_block is None or stream_id != self._header_stream:
            raise ProtocolError("a CONTINUATION frame without its HEADERS")
        self._header_block.append(payload)
        if flags & END_HEADERS:
            block, self._header_block = b"".join(self._header_block), None
            self._headers_done(block)

    def _headers_done(self, block: bytes) -> None:
        fields = self.known.get(block)
        if fields is None:
            fields = self._decode(block)
        stream = self._own(self._header_stream)
        if stream is not None:
            stream.headers += fields
            if self._header_flags & END_STREAM:
                stream.done = True

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """Decode a header block with hpack, and remember it if decoding it left the dynamic
        table as it was: the same bytes then decode to the same fields until the table
        changes, and the server sends the same response-header block on every stream (a
        few static and dynamic indexes). A block that changes the table is always decoded,
        and forgets every block remembered (their indexes may now point elsewhere)."""
        table = self.decoder.header_table
        entries = table.dynamic_entries
        head = entries[0] if entries else None
        size, count = table.maxsize, len(entries)
        # raw=True: a list of (name, value) tuples of bytes
        fields = cast("list[tuple[bytes, bytes]]", self.decoder.decode(block, raw=True))
        entries = table.dynamic_entries
        if (
            len(entries) == count
            and (entries[0] if entries else None) is head  # each insertion is a new head
            and table.maxsize == size
        ):
            if len(self.known) >= KNOWN_BLOCKS:
                self.known.clear()
            self.known[block] = fields
        else:
            self.known.clear()
        return fields

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        stream = self._own(stream_id)
        if stream is None:
            return
        code = U32.unpack_from(payload)[0] if len(payload) >= 4 else 0
        if code == 7:  # REFUSED_STREAM: not processed
            raise Unprocessed("the server refused the stream")
        raise ProtocolError(f"the server reset the stream: {error_name(code)}")

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & ACK:
            return
        for i in range(0, len(payload) - len(payload) % 6, 6):
            key, value = struct.unpack_from(">HL", payload, i)
            if key == SETTINGS_MAX_FRAME_SIZE:
                self.max_frame = value
            elif key == SETTINGS_INITIAL_WINDOW_SIZE:
                if self.stream is not None:  # the change applies to open streams too
                    self.stream.send_window += value - self.peer_initial_window
                self.peer_initial_window = value
        assert self.sock is not None
        self.sock.sendall(frame(SETTINGS, ACK, 0))
        self.settled = True

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not flags & ACK:
            assert self.sock is not None
            self.sock.sendall(frame(PING, ACK, 0, payload))

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        last, code = struct.unpack_from(">LL", payload)
        self.goaway = last & MAX_STREAM_ID
        stream = self.stream
        if stream is not None and stream.id > self.goaway:
            raise Unprocessed(f"the server is going away ({error_name(code)})")

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        increment = U32.unpack_from(payload)[0] & MAX_STREAM_ID
        if stream_id == 0:
            self.send_window += increment
        elif self.stream is not None and stream_id == self.stream.id:
            self.stream.send_window += increment

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise ProtocolError("PUSH_PROMISE, though this client disabled push")

    def _own(self, stream_id: int) -> _Stream | None:
        stream = self.stream
        return stream if stream is not None and stream.id == stream_id else None

    HANDLERS: ClassVar[dict[int, Any]] = {
        DATA: _on_data,
        HEADERS: _on_headers,
        CONTINUATION: _on_continuation,
        RST_STREAM: _on_rst_stream,
        SETTINGS: _on_settings,
        PING: _on_ping,
        GOAWAY: _on_goaway,
        WINDOW_UPDATE: _on_window_update,
        PUSH_PROMISE: _on_push_promise,
    }
