"""Request and reply bodies as each transport carries them: the one place a batch becomes the
bytes a client sends (a serialized protobuf message for gRPC, a JSON or MessagePack document
for REST) and a reply's bytes become a prediction again. The harness's clients, its Locust
users, the wrk/h2load drivers and `bench` all go through here."""

from __future__ import annotations

from . import grpc_codec, rest
from .contract import JSON, MODEL_FAMILIES, MSGPACK, Batch, Family, PixelEncoding, Prediction


def media_type(transport: str) -> str:
    """The Content-Type of a REST transport's bodies."""
    return MSGPACK if transport == "msgpack" else JSON


def encode(
    transport: str,
    model: str,
    batch: Batch,
    encoding: PixelEncoding = PixelEncoding.RAW,
    family: Family | None = None,
) -> bytes:
    """The request body for `batch`; `family` defaults to the model's own."""
    family = family or MODEL_FAMILIES[model]
    if transport == "grpc":
        return grpc_codec.encode_request(family, model, batch, encoding).SerializeToString()
    binary = transport == "msgpack"
    body = rest.encode_request(family, batch, binary=binary, encoding=encoding)
    return rest.dump_msgpack(body) if binary else rest.dump_json(body)


def decode(
    transport: str, family: Family, reply: bytes, content_type: str | None = None
) -> Prediction:
    """The prediction in a reply body (REST: in `content_type`, by default the transport's)."""
    if transport == "grpc":
        return grpc_codec.decode_prediction(family, reply)
    return rest.decode_prediction(
        family, rest.parse_body(reply, content_type or media_type(transport))
    )
