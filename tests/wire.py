"""Raw calls for the bad-input tests, below the harness's clients: any bytes to a gRPC
method, any body and Content-Type to an HTTP route. A failed gRPC call raises `Rejected`
with its status and details."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from wiremark.payloads.contract import (
    SERVER_TIMING,
    grpc_path,
    predict_path,
)


@dataclass
class Rejected(Exception):
    status: Any  # int for HTTP, grpc.StatusCode for gRPC
    message: str
    body: dict[str, Any] | None = None


def grpc_raw(channel: grpc.Channel, method: str, data: bytes) -> tuple[bytes, str]:
    try:
        reply, call = channel.unary_unary(grpc_path(method)).with_call(data, timeout=60)
    except grpc.RpcError as exc:
        raise Rejected(exc.code(), exc.details() or "") from None
    timing = dict(call.trailing_metadata() or ()).get(SERVER_TIMING, "")
    return reply, timing


def http_raw(
    client: httpx.Client, address: str, model: str, body: bytes, content_type: str
) -> httpx.Response:
    return client.post(
        f"http://{address}{predict_path(model)}",
        content=body,
        headers={"content-type": content_type},
    )
