"""Request and reply bodies as each transport carries them: a batch becomes the bytes a
client sends, and a reply's bytes become a prediction again, through the transport's codec
(`payloads/transport.py`). The harness's clients, its Locust users, the wrk/h2load drivers
and `bench` all go through here."""

from __future__ import annotations

from . import transport as transports
from .contract import MODEL_FAMILIES, Batch, Family, PixelEncoding, Prediction


def media_type(transport: str) -> str:
    """The Content-Type of a transport's bodies."""
    return transports.get(transport).media_type


def encode(
    transport: str,
    model: str,
    batch: Batch,
    encoding: PixelEncoding = PixelEncoding.RAW,
    family: Family | None = None,
) -> bytes:
    """The request body for `batch`; `family` defaults to the model's own."""
    codec = transports.get(transport).codec
    return codec.encode_request(family or MODEL_FAMILIES[model], model, batch, encoding)


def decode(
    transport: str, family: Family, reply: bytes, content_type: str | None = None
) -> Prediction:
    """The prediction in a reply body: by the codec of `content_type` where a transport of
    the same server kind has one (an HTTP server answers in the request's media type), else
    by the transport's own."""
    descriptor = transports.get(transport)
    codec = descriptor.codec
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        for other in transports.served_by(descriptor.server):
            if other.media_type == media:
                codec = other.codec
                break
    return codec.decode_reply(family, reply)
