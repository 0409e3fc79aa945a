"""Test-side calls over each transport with the real clients: grpcio with the generated
messages, httpx with JSON or MessagePack bodies. Returns decoded predictions, or raises
`Rejected` carrying the status and error body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from wiremark.payloads import grpc_codec, rest
from wiremark.payloads.contract import (
    GRPC_METHODS,
    JSON,
    MODEL_FAMILIES,
    MSGPACK,
    SERVER_TIMING,
    Batch,
    PixelEncoding,
    Prediction,
    grpc_path,
    predict_path,
)


@dataclass
class Rejected(Exception):
    status: Any  # int for HTTP, grpc.StatusCode for gRPC
    message: str
    body: dict[str, Any] | None = None


@dataclass
class Answer:
    prediction: Prediction
    server_timing: str


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


def predict(
    transport: str,
    target: Any,
    model: str,
    batch: Batch,
    encoding: PixelEncoding = PixelEncoding.RAW,
) -> Answer:
    """`target`: a grpc.Channel for grpc, (httpx.Client, address) for json and msgpack."""
    family = MODEL_FAMILIES[model]
    if transport == "grpc":
        data = grpc_codec.encode_request(family, model, batch, encoding).SerializeToString()
        reply, timing = grpc_raw(target, GRPC_METHODS[family], data)
        return Answer(grpc_codec.decode_prediction(family, reply), timing)
    client, address = target
    binary = transport == "msgpack"
    body = rest.encode_request(family, batch, binary=binary, encoding=encoding)
    payload = rest.dump_msgpack(body) if binary else rest.dump_json(body)
    response = http_raw(client, address, model, payload, MSGPACK if binary else JSON)
    if response.status_code != 200:
        raise Rejected(response.status_code, response.text, response.json())
    parsed = rest.parse_body(response.content, response.headers["content-type"])
    return Answer(rest.decode_prediction(family, parsed), response.headers.get("server-timing", ""))
