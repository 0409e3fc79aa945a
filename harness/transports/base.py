"""What every load driver provides: the interface of one wire's client side.

A driver serves every transport of its wire (`payloads.transport.WIRES`): the transport's
codec says what the bodies are; the driver says how they travel. It gives:

- `client(...)`: a `Client` for conformance and metadata, raising `payloads.errors` only;
  with a `tls.Trust`, over TLS, verifying the server's certificate (as every user does,
  given the class attribute `tls`);
- `user_base(client)`: the Locust user class of the wire for one of `CLIENTS` (imported
  lazily: Locust patches the process for gevent, which only a load-generator process may
  have), and `clients`: how each of them runs, in words, recorded in the results;
- `healthy(address)`: the wire's own health check;
- `send(...)`: one raw request, for checking a C tool's target before it is loaded;
- `tool_file`, `tool_argv`, `tool_sample`: the C load generator of the wire (h2load or wrk);
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from wiremark.payloads.contract import MODEL_FAMILIES, Batch, Family, PixelEncoding, Prediction
from wiremark.payloads.transport import Transport
from wiremark.reports.records import LEAN, LIBRARY

from ..tls import Trust

CONNECT_TIMEOUT = 10.0  # the most seconds to wait for a server to answer at all

# The client libraries a load user can be built on (a scenario's `client` dimension), as
# the result file names them: LEAN (this project's lean clients: the cell measures the
# server) and LIBRARY (the wire's stock Python library: what a caller pays per call).
CLIENTS = (LEAN, LIBRARY)


@dataclass
class Reply:
    prediction: Prediction
    server_ms: dict[str, float] = field(default_factory=dict)  # decode / infer / encode
    request_bytes: int = 0  # the body (the protobuf message for gRPC)
    response_bytes: int = 0


class Client(ABC):
    """One connection to one server of one transport (over TLS when given a `Trust`)."""

    def __init__(
        self, transport: Transport, address: str, timeout: float = 30.0, tls: Trust | None = None
    ) -> None:
        self.descriptor = transport
        self.transport = transport.name
        self.codec = transport.codec
        self.address = address
        self.timeout = timeout
        self.tls = tls

    def predict(
        self,
        model: str,
        batch: Batch,
        encoding: PixelEncoding = PixelEncoding.RAW,
        family: Family | None = None,
    ) -> Reply:
        """One request. `family` defaults to the model's own (a model this project does not
        know needs it named)."""
        family = family or MODEL_FAMILIES[model]
        data = self.codec.encode_request(family, model, batch, encoding)
        reply, timing = self.exchange(model, family, data)
        return Reply(self.codec.decode_reply(family, reply), timing, len(data), len(reply))

    @abstractmethod
    def exchange(self, model: str, family: Family, body: bytes) -> tuple[bytes, dict[str, float]]:
        """Send one encoded request; (reply body, the server's own timings)."""

    @abstractmethod
    def metadata(self, model: str) -> dict[str, Any]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ToolSample:
    """What a C tool measured: completed requests per second, median latency, requests."""

    rps: float
    p50_ms: float
    requests: int


class Driver(ABC):
    wire: ClassVar[str]
    tool: ClassVar[str]  # the C load generator of this wire
    tool_package: ClassVar[str]  # its Debian package
    echo_path: ClassVar[str]  # the bare echo of `wiremark overhead` on this wire
    clients: ClassVar[dict[str, str]]  # each of CLIENTS: how its users run, in words

    @abstractmethod
    def client(
        self, transport: Transport, address: str, timeout: float = 30.0, tls: Trust | None = None
    ) -> Client: ...

    @abstractmethod
    def user_base(self, client: str = LEAN) -> type[Any]:
        """The Locust user of this wire on one of `CLIENTS` (a
        `harness.users.TransportUser`)."""

    @abstractmethod
    def healthy(self, address: str, codec: Any = None, tls: Trust | None = None) -> bool:
        """True when the server says SERVING; False while it loads or does not answer. With
        a codec that has its API's own check (`payloads.transport.health_call`), that one;
        with a `Trust`, over TLS."""

    @abstractmethod
    def send(
        self,
        address: str,
        path: str,
        body: bytes,
        media: str,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """One request with a raw body and the codec's extra headers (`request_headers`);
        the reply body (a RuntimeError naming the problem)."""

    @abstractmethod
    def tool_file(
        self, body: bytes, media: str, tmp: Path, name: str, headers: dict[str, str] | None = None
    ) -> Path:
        """The C tool's input for sending `body` with the codec's extra headers (a framed
        body, or a script)."""

    @abstractmethod
    def tool_argv(
        self, url: str, file: Path, conns: int, duration: int, tmp: Path
    ) -> tuple[list[str] | None, list[str]]:
        """(an unmeasured warm-up command or None, the measured command)."""

    @abstractmethod
    def tool_sample(self, out: str, url: str, reply_len: int, tmp: Path) -> ToolSample:
        """The tool's output read back; a RuntimeError when it had any error."""
