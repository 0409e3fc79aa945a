"""Request and reply bodies as each transport carries them: a batch becomes the bytes a
client sends, and a reply's bytes become a prediction again, through the transport's codec
(`payloads/transport.py`), looked up by the transport's name: for callers that hold a name,
not a descriptor (bench's references and sample checks, the C-tool targets)."""

from __future__ import annotations

from . import transport as transports
from .contract import MODEL_FAMILIES, Batch, Family, PixelEncoding, Prediction


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


def decode(transport: str, family: Family, reply: bytes) -> Prediction:
    """The prediction in a reply body of the transport."""
    return transports.get(transport).codec.decode_reply(family, reply)
