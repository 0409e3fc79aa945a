"""The errors a request can earn, named once and mapped to each transport at its boundary.

    WiremarkError                 any problem with a request, carries `field` and `message`
    ├── MalformedBody             the body is not valid JSON / MessagePack / protobuf
    ├── UnsupportedMediaType      a Content-Type the endpoint does not speak
    ├── UnknownModel              no model of that name (or version, or label) is loaded
    ├── UnknownSignature          the model has no signature of that name (TF Serving's API)
    ├── InvalidInput              the body parses but a value is wrong: shape, type, NaN, ...
    ├── TooLarge                  a batch above the limit, or a body above the size limit
    ├── NotReady                  the server is still loading or warming its models
    ├── SlowBody                  the client stopped sending its body (HTTP: 408)
    ├── Overloaded                `--max-in-flight` requests already in flight: retry later
    ├── Unimplemented             a method of a standard API this server does not serve
    ├── ServerFault               the server failed on a good request (a bug, a crash)
    ├── Unreachable               no connection: refused, reset, or no such host (client side)
    └── DeadlineExceeded          no answer within the client's timeout (client side)

Servers map them to a status with `HTTP_STATUS` and `GRPC_STATUS` below; clients map a
status back with `from_http` and `from_grpc`, so callers catch one hierarchy whatever the
transport.
"""

from __future__ import annotations

import grpc


class WiremarkError(Exception):
    """A request could not be served. `field` names the part of the request at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        """The REST error body: TF Serving's {"error": message}, and the field at fault."""
        body: dict[str, object] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class MalformedBody(WiremarkError):
    pass


class UnsupportedMediaType(WiremarkError):
    pass


class UnknownModel(WiremarkError):
    pass


class UnknownSignature(WiremarkError):
    pass


class InvalidInput(WiremarkError):
    pass


class TooLarge(WiremarkError):
    pass


class NotReady(WiremarkError):
    pass


class Unimplemented(WiremarkError):
    pass


class SlowBody(WiremarkError):
    pass


class Overloaded(WiremarkError):
    pass


class ServerFault(WiremarkError):
    pass


class Unreachable(WiremarkError):
    pass


class DeadlineExceeded(WiremarkError):
    pass


# As TF Serving's REST API maps its statuses: INVALID_ARGUMENT 400, NOT_FOUND 404,
# RESOURCE_EXHAUSTED 429 (an over-limit batch or body), UNIMPLEMENTED 501, UNAVAILABLE 503.
HTTP_STATUS: dict[type[WiremarkError], int] = {
    MalformedBody: 400,
    UnknownModel: 404,
    UnknownSignature: 404,
    TooLarge: 429,
    UnsupportedMediaType: 415,
    InvalidInput: 400,
    NotReady: 503,
    Unimplemented: 501,
    SlowBody: 408,
    Overloaded: 503,  # with Retry-After
    ServerFault: 500,
    Unreachable: 502,
    DeadlineExceeded: 504,
}

GRPC_STATUS: dict[type[WiremarkError], grpc.StatusCode] = {
    MalformedBody: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownModel: grpc.StatusCode.NOT_FOUND,
    UnknownSignature: grpc.StatusCode.NOT_FOUND,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    SlowBody: grpc.StatusCode.DEADLINE_EXCEEDED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ServerFault: grpc.StatusCode.INTERNAL,
    Unreachable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def http_status(error: WiremarkError) -> int:
    return HTTP_STATUS.get(type(error), 400)


def grpc_status(error: WiremarkError) -> grpc.StatusCode:
    return GRPC_STATUS.get(type(error), grpc.StatusCode.INVALID_ARGUMENT)


_FROM_HTTP = {
    400: InvalidInput,
    404: UnknownModel,
    408: SlowBody,  # the server gave up waiting for the body
    413: TooLarge,  # a proxy's answer to a large body
    415: UnsupportedMediaType,
    422: InvalidInput,
    429: TooLarge,
    501: Unimplemented,
    503: NotReady,
    504: DeadlineExceeded,
}


def from_http(status: int, body: object) -> WiremarkError:
    """An error response -> the error it reports. `body` is the parsed JSON error body,
    {"error": message, "field"} (TF Serving's, with the field), or anything else a proxy may
    have sent."""
    message, field = f"HTTP {status}", None
    if isinstance(body, dict):
        message = str(body.get("error") or body.get("detail") or message)
        field = body.get("field") if isinstance(body.get("field"), str) else None
    cls = _FROM_HTTP.get(status, ServerFault if status >= 500 else InvalidInput)
    return cls(message, field)


_FROM_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: UnknownModel,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooLarge,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def from_grpc(code: grpc.StatusCode, details: str | None) -> WiremarkError:
    """A failed call's status -> the error it reports. The server writes details as
    "field: message"; UNAVAILABLE means a loading server or, before any answer, no server."""
    text = details or code.name
    field, sep, message = text.partition(": ")
    if not sep or " " in field:
        field, message = None, text  # type: ignore[assignment]
    if code is grpc.StatusCode.UNAVAILABLE:
        loading = "loading" in text
        return (NotReady if loading else Unreachable)(message, field)
    return _FROM_GRPC.get(code, ServerFault)(message, field)
