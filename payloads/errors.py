"""The errors a request can earn, named once and mapped to each transport at its boundary.

    WiremarkError                 any problem with a request, carries `field` and `message`
    ├── MalformedBody             the body is not valid JSON / MessagePack / protobuf
    ├── UnsupportedMediaType      a Content-Type the endpoint does not speak
    ├── UnknownModel              no model of that name is loaded
    ├── InvalidInput              the body parses but a value is wrong: shape, type, NaN, ...
    ├── TooLarge                  a batch above the limit, or a body above the size limit
    └── NotReady                  the server is still loading or warming its models

Servers map them to a status with `HTTP_STATUS` and `GRPC_STATUS` below (by class, most
specific first); the harness maps statuses back to these classes on the client side.
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
        body: dict[str, object] = {"error": type(self).__name__, "message": self.message}
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


class InvalidInput(WiremarkError):
    pass


class TooLarge(WiremarkError):
    pass


class NotReady(WiremarkError):
    pass


HTTP_STATUS: dict[type[WiremarkError], int] = {
    MalformedBody: 400,
    UnknownModel: 404,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    NotReady: 503,
}

GRPC_STATUS: dict[type[WiremarkError], grpc.StatusCode] = {
    MalformedBody: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownModel: grpc.StatusCode.NOT_FOUND,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotReady: grpc.StatusCode.UNAVAILABLE,
}


def http_status(error: WiremarkError) -> int:
    return HTTP_STATUS.get(type(error), 400)


def grpc_status(error: WiremarkError) -> grpc.StatusCode:
    return GRPC_STATUS.get(type(error), grpc.StatusCode.INVALID_ARGUMENT)
