"""The transport registry: one frozen descriptor per transport, and nothing else decides what
a transport is.

A transport is a wire (gRPC over HTTP/2, or REST over HTTP/1.1), a body codec (what a batch
becomes on that wire, and what a reply becomes again), and the server kind that serves it
(`servers/`), driven from the load side by the driver of its wire (`harness/transports/`).
Servers, clients, Locust users, the C-tool drivers, bench and the result files all look a
transport up here; none of them tests a transport's name.

    from wiremark.payloads import transport
    grpc = transport.get("grpc")
    body = grpc.codec.encode_request(family, "iris", rows, encoding)

Adding one means a codec, a descriptor and `register(...)`: from this package, or from a
plugin module named in `WIREMARK_PLUGINS` (comma-separated, imported on the first look-up
in every process, so server and load-generator processes see it too) or installed under
the `wiremark.plugins` entry-point group. A plugin may also register server kinds, load
drivers and models (`servers.serve.register_server_kind`, `harness.transports.register`,
`servers.runner.register`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from . import grpc_codec, oip, rest, tfs_codec
from .contract import (
    GRPC_METADATA_METHOD,
    GRPC_METHODS,
    JSON,
    MSGPACK,
    Batch,
    Family,
    Limits,
    PixelEncoding,
    Prediction,
    grpc_path,
    metadata_path,
    predict_path,
)

# The wires, as the result files name them (`reports/records.py` reads the same words).
WIRE_GRPC = "grpc-h2"  # gRPC framing over HTTP/2
WIRE_HTTP1 = "http1.1"  # REST over HTTP/1.1
WIRES = (WIRE_GRPC, WIRE_HTTP1)

PLUGINS_ENV = "WIREMARK_PLUGINS"
ENTRY_POINTS = "wiremark.plugins"


class UnknownTransport(ValueError):
    pass


class BodyCodec(Protocol):
    """What a batch becomes on the wire and back, for both ends, and where it goes.

    Client side: `encode_request`, `decode_reply`, `route` (a gRPC method's path, or a REST
    route), `metadata_call` and `decode_metadata`. Server side: `decode_request` (raises
    `InvalidInput` and the rest of `payloads.errors`, naming the field) and `encode_reply`.
    `decode_request` also returns what the reply must follow (a REST request's row or
    columnar form, TF Serving's model spec and output filter; None when nothing), which the
    server hands to `encode_reply`. On gRPC the model's name travels inside the message, so
    the server parses it and `decode_request` takes the parsed message."""

    @property
    def media_type(self) -> str: ...

    def encode_request(
        self, family: Family, model: str, batch: Batch, encoding: PixelEncoding
    ) -> bytes: ...

    def decode_reply(self, family: Family, body: bytes) -> Prediction: ...

    def decode_request(self, family: Family, body: Any, limits: Limits) -> tuple[Batch, Any]: ...

    def encode_reply(self, prediction: Prediction, form: Any = None) -> bytes: ...

    def route(self, family: Family, model: str) -> str: ...

    def metadata_call(self, model: str) -> tuple[str, bytes]:
        """(path, request body) asking for a model's metadata; an empty body is a GET."""
        ...

    def decode_metadata(self, body: bytes) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ProtobufCodec:
    """wiremark.v1 protobuf messages (`payloads/wiremark.proto`)."""

    media_type: str = "application/grpc"

    def encode_request(
        self, family: Family, model: str, batch: Batch, encoding: PixelEncoding
    ) -> bytes:
        return grpc_codec.encode_request(family, model, batch, encoding).SerializeToString()

    def decode_reply(self, family: Family, body: bytes) -> Prediction:
        return grpc_codec.decode_prediction(family, body)

    def decode_request(self, family: Family, body: Any, limits: Limits) -> tuple[Batch, Any]:
        return grpc_codec.DECODERS[family](body, limits), None

    def encode_reply(self, prediction: Prediction, form: Any = None) -> bytes:
        return grpc_codec.encode_prediction(prediction).SerializeToString()

    def route(self, family: Family, model: str) -> str:
        return grpc_path(GRPC_METHODS[family])

    def metadata_call(self, model: str) -> tuple[str, bytes]:
        return grpc_path(GRPC_METADATA_METHOD), grpc_codec.metadata_request(model)

    def decode_metadata(self, body: bytes) -> dict[str, Any]:
        return grpc_codec.decode_metadata(body)


@dataclass(frozen=True)
class TensorProtoCodec:
    """TF Serving's gRPC API (`tensorflow.serving.PredictionService`): PredictRequest with
    TensorProto inputs, named and typed by each model's signature (`payloads/tfs_codec.py`)."""

    media_type: str = "application/grpc"

    def encode_request(
        self, family: Family, model: str, batch: Batch, encoding: PixelEncoding
    ) -> bytes:
        request = tfs_codec.encode_request(family, model, batch, encoding)
        return bytes(request.SerializeToString())

    def decode_reply(self, family: Family, body: bytes) -> Prediction:
        return tfs_codec.decode_response(family, body)

    def decode_request(self, family: Family, body: Any, limits: Limits) -> tuple[Batch, Any]:
        outputs = tfs_codec.check_outputs(family, body.output_filter)
        spec = tfs_codec.Spec(body.model_spec.name, outputs)
        return tfs_codec.decode_inputs(family, body.inputs, limits), spec

    def encode_reply(self, prediction: Prediction, form: Any = None) -> bytes:
        return tfs_codec.encode_response(prediction, form or tfs_codec.Spec("", ()))

    def route(self, family: Family, model: str) -> str:
        return tfs_codec.PREDICT_PATH

    def metadata_call(self, model: str) -> tuple[str, bytes]:
        request = tfs_codec.metadata_request(model)
        return tfs_codec.METADATA_PATH, bytes(request.SerializeToString())

    def decode_metadata(self, body: bytes) -> dict[str, Any]:
        return tfs_codec.decode_metadata(body)


@dataclass(frozen=True)
class RestCodec:
    """TF Serving's REST bodies: JSON (orjson; binary values as {"b64": ...}), or with
    `binary` MessagePack (binary values as `bin`, float32 kept as float32)."""

    media_type: str = JSON
    binary: bool = False

    def _parse(self, body: bytes) -> Any:
        return rest.parse_body(body, MSGPACK if self.binary else JSON)

    def _dump(self, value: Any) -> bytes:
        return rest.dump_msgpack(value) if self.binary else rest.dump_json(value)

    def encode_request(
        self, family: Family, model: str, batch: Batch, encoding: PixelEncoding
    ) -> bytes:
        return self._dump(rest.encode_request(family, batch, binary=self.binary, encoding=encoding))

    def decode_reply(self, family: Family, body: bytes) -> Prediction:
        return rest.decode_prediction(family, self._parse(body))

    def decode_request(self, family: Family, body: Any, limits: Limits) -> tuple[Batch, Any]:
        return rest.decode_request(family, self._parse(body), limits)

    def encode_reply(self, prediction: Prediction, form: Any = None) -> bytes:
        reply = rest.encode_prediction(prediction, form)  # numpy values: orjson takes them
        return rest.dump_msgpack(rest.to_plain(reply)) if self.binary else rest.dump_json(reply)

    def route(self, family: Family, model: str) -> str:
        return predict_path(model)

    def metadata_call(self, model: str) -> tuple[str, bytes]:
        return metadata_path(model), b""

    def decode_metadata(self, body: bytes) -> dict[str, Any]:
        return dict(rest.parse_body(body, JSON))


@dataclass(frozen=True)
class OipRestCodec:
    """The Open Inference Protocol's REST bodies (`payloads/oip.py`): JSON tensors, or the
    binary tensor data extension (`raw` encoding), whose JSON header length travels in the
    Inference-Header-Content-Length header (`request_headers`)."""

    media_type: str = JSON
    reply_media_types: tuple[str, ...] = (JSON, oip.OCTET)  # binary outputs: octet-stream
    # requests are read whatever their Content-Type says, as Triton reads them (tritonclient
    # sends none, or application/octet-stream with binary tensors)
    any_content_type: bool = True

    def encode_request(
        self, family: Family, model: str, batch: Batch, encoding: PixelEncoding
    ) -> bytes:
        return oip.encode_rest_request(family, batch, encoding)[0]

    def request_headers(self, body: bytes) -> dict[str, str]:
        length = oip.header_length_of(body)
        return {} if length is None else {"Inference-Header-Content-Length": str(length)}

    def decode_reply(self, family: Family, body: bytes) -> Prediction:
        return oip.decode_rest_reply(family, body)

    def decode_request(self, family: Family, body: Any, limits: Limits) -> tuple[Batch, Any]:
        """`body`: the request's bytes, or (bytes, its Inference-Header-Content-Length);
        the form's model is left for the caller, who knows the route, to name."""
        data, length = body if isinstance(body, tuple) else (body, None)
        header, binary = oip.split_rest(data, length)
        return oip.decode_rest_request(family, "", header, binary, limits, length is not None)

    def encode_reply(self, prediction: Prediction, form: Any = None) -> bytes:
        return oip.encode_rest_reply(prediction, form or oip.Form(""))

    def route(self, family: Family, model: str) -> str:
        return oip.infer_path(model)

    def metadata_call(self, model: str) -> tuple[str, bytes]:
        return oip.metadata_path(model), b""

    def decode_metadata(self, body: bytes) -> dict[str, Any]:
        return dict(rest.parse_body(body, JSON))

    def health_call(self) -> tuple[str, bytes]:
        """The API's own readiness check, for servers that have no wiremark health (a peer):
        GET /v2/health/ready, ready when it answers 200."""
        return oip.READY_PATH, b""

    def healthy_reply(self, body: bytes) -> bool:
        return True


@dataclass(frozen=True)
class OipGrpcCodec:
    """The Open Inference Protocol's gRPC messages (`inference.GRPCInferenceService`,
    vendored): ModelInferRequest with raw_input_contents (`raw`) or typed contents."""

    media_type: str = "application/grpc"

    def encode_request(
        self, family: Family, model: str, batch: Batch, encoding: PixelEncoding
    ) -> bytes:
        return bytes(oip.encode_grpc_request(family, model, batch, encoding).SerializeToString())

    def decode_reply(self, family: Family, body: bytes) -> Prediction:
        return oip.decode_grpc_reply(family, body)

    def decode_request(self, family: Family, body: Any, limits: Limits) -> tuple[Batch, Any]:
        return oip.decode_grpc_request(family, body, limits)

    def encode_reply(self, prediction: Prediction, form: Any = None) -> bytes:
        return oip.encode_grpc_reply(prediction, form or oip.Form(""))

    def route(self, family: Family, model: str) -> str:
        return oip.INFER_PATH

    def metadata_call(self, model: str) -> tuple[str, bytes]:
        request = oip.messages().ModelMetadataRequest(name=model)
        return oip.METADATA_PATH, bytes(request.SerializeToString())

    def decode_metadata(self, body: bytes) -> dict[str, Any]:
        return oip.decode_grpc_metadata(body)

    def health_call(self) -> tuple[str, bytes]:
        """The API's own readiness check: ServerReady (MLServer has no grpc.health.v1)."""
        return oip.SERVER_READY_PATH, bytes(oip.messages().ServerReadyRequest().SerializeToString())

    def healthy_reply(self, body: bytes) -> bool:
        return bool(oip.parse(oip.messages().ServerReadyResponse, body).ready)


def health_call(codec: BodyCodec) -> tuple[str, bytes] | None:
    """(path, request body) of the codec's API's own readiness check (an empty body: an
    HTTP GET, ready on 200), or None: the wire's own (GET /healthz, grpc.health.v1)."""
    call = getattr(codec, "health_call", None)
    return call() if call is not None else None


def request_headers(codec: BodyCodec, body: bytes) -> dict[str, str]:
    """The headers a request body needs beside Content-Type (the Open Inference Protocol's
    Inference-Header-Content-Length); none for a codec that has no `request_headers`."""
    extra = getattr(codec, "request_headers", None)
    return extra(body) if extra is not None else {}


def reply_media_types(codec: BodyCodec) -> tuple[str, ...]:
    """The media types a codec's replies may come in: its own, unless it says otherwise."""
    return tuple(getattr(codec, "reply_media_types", (codec.media_type,)))


@dataclass(frozen=True)
class Transport:
    name: str  # as scenarios, --transport and result files spell it
    label: str  # as the report writes it
    short_label: str  # where space is short: table headers, plot ticks
    wire: str  # one of WIRES: which load driver and which C tool speak it
    codec: BodyCodec
    server: str  # the server kind that serves it (`servers.serve.SERVER_KINDS`)
    api: str = "wiremark"  # whose API the bodies follow
    # the scenarios' `encodings` (raw, list) choose binary or JSON/typed tensors for every
    # model on this transport, not only MNIST's pixels
    tensor_encodings: bool = False
    models: tuple[str, ...] = ()  # the models its server can serve; empty: every model
    # a peer: another project's server (e.g. "MLServer") measured beside wiremark's, in a
    # virtualenv of its own; only ever run when named (never among the defaults)
    peer: str = ""
    # the encodings its server accepts (MLServer's REST has no binary tensor extension)
    encodings: tuple[str, ...] = ("raw", "list")
    # its server kind serves TLS (`--tls-cert`): scenarios' `tls = [true]` cells run on it
    tls: bool = True

    def serves(self, model: str) -> bool:
        return not self.models or model in self.models

    @property
    def media_type(self) -> str:
        return self.codec.media_type

    def describe(self) -> dict[str, str]:
        """What the result file records of the transport (the report reads labels and order
        from there, not from this package)."""
        return {
            "name": self.name,
            "label": self.label,
            "short_label": self.short_label,
            "wire": self.wire,
            "server": self.server,
            "api": self.api,
            "media_type": self.media_type,
            "peer": self.peer,
        }


TRANSPORTS: dict[str, Transport] = {}


def register(transport: Transport) -> Transport:
    if transport.wire not in WIRES:
        raise ValueError(f"transport {transport.name!r}: unknown wire {transport.wire!r}")
    TRANSPORTS[transport.name] = transport
    return transport


register(Transport("grpc", "gRPC", "gRPC", WIRE_GRPC, ProtobufCodec(), "grpcio"))
register(Transport("json", "JSON", "JSON", WIRE_HTTP1, RestCodec(JSON), "fastapi"))
register(
    Transport("msgpack", "MessagePack", "MsgPack", WIRE_HTTP1, RestCodec(MSGPACK, True), "fastapi")
)
# TF Serving's gRPC API, served by the same grpcio server kind beside wiremark's own
TFS = "tf-serving"
register(
    Transport(
        "tfs-grpc", "TF Serving gRPC", "TFS gRPC", WIRE_GRPC, TensorProtoCodec(), "grpcio", TFS
    )
)
# The Open Inference Protocol (KServe v2: Triton, MLServer, KServe), on the same two server
# kinds; the scenarios' `encodings` choose binary (raw) or JSON/typed (list) tensors
OIP = "open-inference"
register(
    Transport("oip-rest", "OIP REST", "OIP REST", WIRE_HTTP1, OipRestCodec(), "fastapi", OIP, True)
)
register(
    Transport("oip-grpc", "OIP gRPC", "OIP gRPC", WIRE_GRPC, OipGrpcCodec(), "grpcio", OIP, True)
)
# A real peer: MLServer (Seldon) speaking the same protocol, started by the "mlserver" server
# kind in a virtualenv of its own (`harness/peer.py`); it serves iris_rf, wiremark's forest
# (JSON tensors only over REST: MLServer 1.7 refuses the binary tensor data extension, 422)
MLSERVER = "MLServer"
register(
    Transport(
        "mlserver-rest",
        "MLServer OIP REST",
        "MLS REST",
        WIRE_HTTP1,
        OipRestCodec(),
        "mlserver",
        OIP,
        tensor_encodings=True,
        models=("iris_rf",),
        peer=MLSERVER,
        encodings=("list",),
        tls=False,  # the peer runs as its defaults have it: plaintext
    )
)
register(
    Transport(
        "mlserver-grpc",
        "MLServer OIP gRPC",
        "MLS gRPC",
        WIRE_GRPC,
        OipGrpcCodec(),
        "mlserver",
        OIP,
        tensor_encodings=True,
        models=("iris_rf",),
        peer=MLSERVER,
        tls=False,
    )
)


_plugins_lock = threading.Lock()
_plugins_loaded = False


def load_plugins() -> None:
    """Import the plugin modules (`WIREMARK_PLUGINS`, entry points) once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _plugins_lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
            importlib.import_module(name)
        for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
            entry.load()


def names(peers: bool = False) -> tuple[str, ...]:
    """Every registered transport, in registration order (the report's order too): wiremark's
    own, and with `peers` the peers' too (a peer runs only when named: it installs a
    virtualenv on first use)."""
    load_plugins()
    return tuple(name for name, t in TRANSPORTS.items() if peers or not t.peer)


def get(name: str) -> Transport:
    load_plugins()
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise UnknownTransport(
            f"unknown transport {name!r}: choose from {', '.join(TRANSPORTS)}"
        ) from None


def served_by(server: str) -> list[Transport]:
    """The transports one server kind serves (an HTTP server picks the codec by media type)."""
    load_plugins()
    return [t for t in TRANSPORTS.values() if t.server == server]
