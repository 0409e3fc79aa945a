"""Load drivers, one per wire: how the harness reaches a server of any registered transport.

    from wiremark.harness import transports
    driver = transports.driver("json")   # the driver of the transport's wire
    with driver.client(descriptor, "127.0.0.1:8000") as client: ...

| file | wire | client | users: lean, library | health | C tool |
|---|---|---|---|---|---|
| `grpc_wire.py` | gRPC, HTTP/2 | grpcio | `http2.py`, grpcio + gevent | grpc.health.v1 | h2load |
| `http_wire.py` | REST, HTTP/1.1 | httpx | `http1.py`, httpx | GET /healthz | wrk |

A plugin (see `payloads/transport.py`) adds a driver with `register(driver)`.
"""

from __future__ import annotations

from wiremark.payloads import transport as registry

from ..tls import Trust
from .base import CONNECT_TIMEOUT, Client, Driver, Reply, ToolSample
from .grpc_wire import GrpcDriver
from .http_wire import HttpDriver

DRIVERS: dict[str, Driver] = {}


def register(driver: Driver) -> Driver:
    DRIVERS[driver.wire] = driver
    return driver


register(GrpcDriver())
register(HttpDriver())


def for_wire(wire: str) -> Driver:
    try:
        return DRIVERS[wire]
    except KeyError:
        raise ValueError(f"no load driver for the wire {wire!r}") from None


def driver(transport: str) -> Driver:
    """The driver of a registered transport's wire."""
    return for_wire(registry.get(transport).wire)


CODEC_METHODS = (
    "encode_request",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "route",
    "metadata_call",
    "decode_metadata",
)


def incomplete(transport: registry.Transport) -> list[str]:
    """What a transport lacks to be served, driven, checked and reported: an empty list for
    a complete one."""
    from wiremark.servers.serve import SERVER_KINDS

    problems = []
    codec = transport.codec
    missing = [m for m in CODEC_METHODS if not callable(getattr(codec, m, None))]
    if codec is None or missing or not getattr(codec, "media_type", ""):
        problems.append(f"no body codec (missing: {', '.join(missing) or 'media_type'})")
    if transport.server not in SERVER_KINDS:
        problems.append(f"no server kind {transport.server!r}")
    if transport.wire not in DRIVERS:
        problems.append(f"no load driver for the wire {transport.wire!r}")
    if not transport.label or not transport.short_label:
        problems.append("no label")
    return problems


def connect(
    transport: str, address: str, timeout: float = 30.0, tls: Trust | None = None
) -> Client:
    """A client of `transport` at `address` (over TLS, verifying, with a `Trust`); raises
    `payloads.errors` only."""
    descriptor = registry.get(transport)
    return for_wire(descriptor.wire).client(descriptor, address, timeout, tls)


__all__ = [
    "CONNECT_TIMEOUT",
    "DRIVERS",
    "Client",
    "Driver",
    "Reply",
    "ToolSample",
    "connect",
    "driver",
    "for_wire",
    "incomplete",
    "register",
]
