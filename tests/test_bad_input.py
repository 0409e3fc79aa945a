"""Bad input gets a clear error naming the problem, and the server keeps serving."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
import zlib
from collections.abc import Iterator

import grpc
import msgpack
import numpy as np
import orjson
import pytest

from wiremark.harness.launch import ServerProcess
from wiremark.payloads import samples
from wiremark.payloads import wiremark_pb2 as pb
from wiremark.payloads.contract import JSON, MSGPACK, metadata_path, predict_path

from .conftest import MAX_BATCH, MAX_BODY
from .wire import Rejected, grpc_raw, http_raw

NAN_ROW = [5.1, float("nan"), 1.4, 0.2]
INF_ROW = [5.1, 3.5, float("inf"), 0.2]
BAD_IMAGE = b"this is not a JPEG"


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels in 57 bytes: a decompression bomb's header
    (what a decoder would allocate for), with no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def pillow_image(size: tuple[int, int], format: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size).save(out, format=format)
    return out.getvalue()


BOMB = png_header(20000, 20000)  # 400 million pixels: 24 GB once decoded
TINY = pillow_image((8, 8), "PNG")
TIFF = pillow_image((64, 64), "TIFF")  # decodable by Pillow, not a documented format
DIGIT = samples.mnist_digits(1)[0][0]

# (case, model, JSON-ish body with bytes for binary values, expected HTTP status, field):
# TF Serving's statuses, INVALID_ARGUMENT 400 and RESOURCE_EXHAUSTED 429
REST_CASES = [
    ("wrong shape", "iris", {"instances": [[5.1, 3.5, 1.4]]}, 400, "instances[0]"),
    ("ragged rows", "iris", {"instances": [[5.1, 3.5, 1.4, 0.2], [1.0]]}, 400, "instances[1]"),
    ("wrong type", "iris", {"instances": [["a", "b", "c", "d"]]}, 400, "instances[0]"),
    ("bool feature", "iris", {"instances": [[True, 3.5, 1.4, 0.2]]}, 400, "instances[0]"),
    ("beyond float32", "iris", {"instances": [[1e39, 3.5, 1.4, 0.2]]}, 400, "instances[0]"),
    ("not a list", "iris", {"instances": "5.1,3.5"}, 400, "instances"),
    ("no instances", "iris", {"rows": [[5.1, 3.5, 1.4, 0.2]]}, 400, "instances"),
    ("empty batch", "iris", {"instances": []}, 400, "instances"),
    (
        "batch above limit",
        "iris",
        {"instances": [[5.1, 3.5, 1.4, 0.2]] * (MAX_BATCH + 1)},
        429,
        "instances",
    ),
    ("digit wrong size", "mnist", {"instances": [b"\x00" * 100]}, 400, "instances[0]"),
    ("digit out of range", "mnist", {"instances": [[[300] * 28] * 28]}, 400, "instances"),
    ("digit wrong shape", "mnist", {"instances": [[[1] * 27] * 28]}, 400, "instances"),
    (
        "undecodable image",
        "face",
        {"instances": [{"image_id": "x", "image": BAD_IMAGE}]},
        400,
        "instances[0].image",
    ),
    (
        "empty image",
        "face",
        {"instances": [{"image_id": "x", "image": b""}]},
        400,
        "instances[0].image",
    ),
    (
        "pixel bomb",
        "face",
        {"instances": [{"image_id": "x", "image": BOMB}]},
        400,
        "instances[0].image",
    ),
    (
        "image too small",
        "face",
        {"instances": [{"image_id": "x", "image": TINY}]},
        400,
        "instances[0].image",
    ),
    (
        "undocumented format",
        "face",
        {"instances": [{"image_id": "x", "image": TIFF}]},
        400,
        "instances[0].image",
    ),
    ("unknown model", "resnet", {"instances": [[1, 2, 3, 4]]}, 404, "model"),
]


def as_json(value):
    """bytes -> {"b64": ...}, recursively, for the JSON flavour of a case."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def still_serving(transport, clients):
    reply = clients[transport].predict("iris", samples.iris_rows(2)[0])
    assert list(reply.prediction.class_ids) == [0, 0]


@pytest.mark.parametrize("transport", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("case", "model", "body", "status", "field"), REST_CASES, ids=[c[0] for c in REST_CASES]
)
def test_rest_rejects(transport, case, model, body, status, field, servers, http_client, clients):
    payload = (
        orjson.dumps(as_json(body))
        if transport == "json"
        else msgpack.packb(body, use_bin_type=True)
    )
    response = http_raw(
        http_client,
        servers[transport].address,
        model,
        payload,
        JSON if transport == "json" else MSGPACK,
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON
    error = response.json()
    assert error["field"] == field and error["error"]
    still_serving(transport, clients)


@pytest.mark.parametrize("row", [NAN_ROW, INF_ROW], ids=["nan", "inf"])
def test_msgpack_rejects_non_finite(row, servers, http_client, clients):
    payload = msgpack.packb({"instances": [[5.1, 3.5, 1.4, 0.2], row]})
    response = http_raw(http_client, servers["msgpack"].address, "iris", payload, MSGPACK)
    assert response.status_code == 400
    assert response.json()["field"] == "instances[1]"
    assert "finite" in response.json()["error"]
    still_serving("msgpack", clients)


@pytest.mark.parametrize(
    ("transport", "payload", "content_type", "status"),
    [
        ("json", b'{"instances": [[5.1, 3.5', JSON, 400),
        ("json", b'{"instances": [[NaN, 3.5, 1.4, 0.2]]}', JSON, 400),
        ("msgpack", b"\xc1\xc1\xc1", MSGPACK, 400),
        ("json", b"instances=1", "application/x-www-form-urlencoded", 400),
        ("json", b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', "text/plain", 415),
        ("json", b"x" * (MAX_BODY + 1), JSON, 429),
    ],
    ids=[
        "invalid-json",
        "json-nan-literal",
        "invalid-msgpack",
        "form-not-json",
        "wrong-content-type",
        "oversize-body",
    ],
)
def test_rest_rejects_bodies(
    transport, payload, content_type, status, servers, http_client, clients
):
    response = http_raw(http_client, servers[transport].address, "iris", payload, content_type)
    assert response.status_code == status
    error = response.json()
    assert error["error"] and error["field"]
    still_serving(transport, clients)


def test_rest_rejects_an_oversize_chunked_body(servers, http_client, clients):
    """No Content-Length to refuse up front: the server counts the bytes as they arrive."""

    def chunks():
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"x" * 1024

    response = http_client.post(
        f"http://{servers['json'].address}{predict_path('iris')}",
        content=chunks(),
        headers={"content-type": JSON},
    )
    assert response.status_code == 429
    assert response.json()["field"] == "body"
    still_serving("json", clients)


@pytest.mark.parametrize(
    ("transport", "content_type"),
    [("json", "Application/JSON; charset=utf-8"), ("msgpack", "application/x-msgpack")],
)
def test_rest_reads_the_media_type_from_a_full_content_type(
    transport, content_type, servers, http_client
):
    body = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    payload = orjson.dumps(body) if transport == "json" else msgpack.packb(body)
    response = http_raw(http_client, servers[transport].address, "iris", payload, content_type)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(JSON if transport == "json" else MSGPACK)


def test_rest_unknown_model_metadata(servers, http_client):
    response = http_client.get(f"http://{servers['json'].address}{metadata_path('resnet')}")
    assert response.status_code == 404
    assert "resnet" in response.json()["error"]


GRPC_CASES = [
    (
        "empty batch",
        "Classify",
        pb.IrisRequest(model="iris"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rows",
    ),
    (
        "batch above limit",
        "Classify",
        pb.IrisRequest(model="iris", rows=[pb.IrisRow(sepal_length=1)] * (MAX_BATCH + 1)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "rows",
    ),
    (
        "nan feature",
        "Classify",
        pb.IrisRequest(model="iris", rows=[pb.IrisRow(sepal_length=float("nan"))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rows[0]",
    ),
    (
        "inf feature",
        "Classify",
        pb.IrisRequest(model="iris", rows=[pb.IrisRow(petal_width=float("-inf"))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rows[0]",
    ),
    (
        "unknown model",
        "Classify",
        pb.IrisRequest(model="resnet", rows=[pb.IrisRow()]),
        grpc.StatusCode.NOT_FOUND,
        "model",
    ),
    (
        "no model",
        "Classify",
        pb.IrisRequest(rows=[pb.IrisRow()]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model",
    ),
    (
        "wrong method for model",
        "Classify",
        pb.IrisRequest(model="mnist", rows=[pb.IrisRow()]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model",
    ),
    (
        "digit wrong size",
        "ClassifyDigits",
        pb.DigitsRequest(model="mnist", images=[pb.Digit(raw=b"\x00" * 10)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "images[0].raw",
    ),
    (
        "digit out of range",
        "ClassifyDigits",
        pb.DigitsRequest(
            model="mnist", images=[pb.Digit(values=pb.PixelValues(values=[256] * 784))]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "images[0].values",
    ),
    (
        "digit unset",
        "ClassifyDigits",
        pb.DigitsRequest(model="mnist", images=[pb.Digit()]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "images[0]",
    ),
    (
        "undecodable image",
        "DetectFaces",
        pb.FaceRequest(model="face", images=[pb.EncodedImage(image_id="x", data=BAD_IMAGE)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "images[0].data",
    ),
    (
        "pixel bomb",
        "DetectFaces",
        pb.FaceRequest(model="face", images=[pb.EncodedImage(image_id="x", data=BOMB)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "images[0].data",
    ),
    (
        "image too small",
        "DetectFaces",
        pb.FaceRequest(model="face", images=[pb.EncodedImage(image_id="x", data=TINY)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "images[0].data",
    ),
    (
        "undocumented format",
        "DetectFaces",
        pb.FaceRequest(model="face", images=[pb.EncodedImage(image_id="x", data=TIFF)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "images[0].data",
    ),
]


@pytest.mark.parametrize(
    ("case", "method", "message", "code", "field"), GRPC_CASES, ids=[c[0] for c in GRPC_CASES]
)
def test_grpc_rejects(case, method, message, code, field, grpc_channel, clients):
    with pytest.raises(Rejected) as err:
        grpc_raw(grpc_channel, method, message.SerializeToString())
    assert err.value.status == code
    assert err.value.message.startswith(f"{field}: ")
    still_serving("grpc", clients)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT),
        (b"\x0a" + b"\x00" * (MAX_BODY + 10), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    ids=["invalid-protobuf", "oversize-message"],
)
def test_grpc_rejects_bodies(payload, code, grpc_channel, clients):
    with pytest.raises(Rejected) as err:
        grpc_raw(grpc_channel, "Classify", payload)
    assert err.value.status == code
    assert err.value.message
    still_serving("grpc", clients)


def test_digit_values_reach_the_model_unchanged(servers, grpc_channel, reference):
    # Both pixel encodings of the same digit give the same answer as raw bytes in-process.
    raw = pb.DigitsRequest(model="mnist", images=[pb.Digit(raw=DIGIT.tobytes())])
    values = pb.DigitsRequest(
        model="mnist", images=[pb.Digit(values=pb.PixelValues(values=DIGIT.ravel().tolist()))]
    )
    a, _ = grpc_raw(grpc_channel, "ClassifyDigits", raw.SerializeToString())
    b, _ = grpc_raw(grpc_channel, "ClassifyDigits", values.SerializeToString())
    assert a == b
    want = reference["mnist"].predict(np.asarray([DIGIT]))
    assert pb.ClassifyResponse.FromString(a).predictions[0].class_id == int(want.class_ids[0])


# --- slow and vanishing clients (HTTP) --------------------------------------------------


@pytest.fixture(scope="module")
def patient_server() -> Iterator[ServerProcess]:
    """A JSON server whose body idle limit is short enough to test: 2 s without a byte."""
    with ServerProcess("json", ("--models", "iris", "--body-idle-timeout", "2")) as proc:
        yield proc


def raw_request(address: str, declared: int, body: bytes) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = (
        f"POST /v1/models/iris:predict HTTP/1.1\r\nHost: {address}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def read_reply(sock: socket.socket) -> bytes:
    """One HTTP reply: its head, then as many body bytes as its Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (the socket's timeout bounds it)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closed(patient_server):
    """Content-Length 1000, 10 bytes sent, then nothing: 408 naming the body once the idle
    limit passes, and the server closes the connection rather than hold it."""
    with raw_request(patient_server.address, 1000, b'{"instance') as sock:
        reply = read_all(sock)  # returns only because the server closed the connection
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply[:300]
    error = json.loads(body)
    assert error["field"] == "body" and "stopped arriving" in error["error"]
    assert "after 10 of the 1000 declared" in error["error"]
    assert patient_server.healthy()


def test_a_slow_steady_body_is_not_cut_off(patient_server):
    """Sent in 12 pieces 0.1 s apart (1.2 s in all, each gap far under the 2 s idle limit):
    answered as any other request."""
    body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    pieces = [body[i : i + 3] for i in range(0, len(body), 3)][:12]
    pieces[-1] += body[3 * 12 :]
    with raw_request(patient_server.address, len(body), b"") as sock:
        for piece in pieces:
            time.sleep(0.1)
            sock.sendall(piece)
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]


def test_headers_that_stop_arriving_get_408_and_the_connection_closed(patient_server):
    """Half a request's headers, then nothing: 408 naming the headers once the idle limit
    passes (the same --body-idle-timeout), and the connection closed rather than held."""
    host, port = patient_server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sent = b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Ty"
        sock.sendall(sent)
        reply = read_all(sock)  # returns only because the server closed the connection
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply[:300]
    error = json.loads(body)
    assert error["field"] == "headers" and "stopped arriving" in error["error"]
    assert f"no bytes for 2 s after {len(sent)}" in error["error"], error
    assert patient_server.healthy()


def test_slow_steady_headers_are_not_cut_off(patient_server):
    """Headers and body sent a few bytes at a time, 0.1 s apart (several seconds in all,
    longer than the 2 s idle limit, each gap far under it): answered as any other request,
    and the connection kept alive for the next one."""
    body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    request = (
        f"POST /v1/models/iris:predict HTTP/1.1\r\nHost: {patient_server.address}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    host, port = patient_server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        for i in range(0, len(request), 6):
            time.sleep(0.1)
            sock.sendall(request[i : i + 6])
        assert read_reply(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(request)  # the same connection serves the next request at once
        assert read_reply(sock).startswith(b"HTTP/1.1 200")


def test_a_client_that_goes_away_is_not_an_internal_error(patient_server):
    sock = raw_request(patient_server.address, 1000, b'{"instances": [[5.1,')
    sock.close()
    deadline = time.monotonic() + 30
    while "went away" not in patient_server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = patient_server.log_text()
    assert "went away" in log and "Traceback" not in log and "internal error" not in log
    assert patient_server.healthy()


# --- admission control -----------------------------------------------------------------


@pytest.mark.parametrize("transport", ["json", "grpc"])
def test_past_max_in_flight_a_request_is_refused_not_queued(transport):
    """--max-in-flight 1 and a 4 s injected delay: of two overlapping predictions one is
    served and the other refused at once (HTTP 503 with Retry-After, gRPC
    RESOURCE_EXHAUSTED), whichever arrives second; then the server serves again."""
    from concurrent.futures import ThreadPoolExecutor

    from wiremark.harness.clients import connect
    from wiremark.payloads.errors import TooLarge, WiremarkError

    args = ("--models", "iris", "--max-in-flight", "1", "--inject-delay-ms", "4000")
    rows = samples.iris_rows(1)[0]
    with ServerProcess(transport, args) as server:

        def predict(pause: float) -> str:
            time.sleep(pause)
            with connect(transport, server.address, timeout=60) as client:
                try:
                    client.predict("iris", rows)
                except WiremarkError as exc:
                    return f"{type(exc).__name__}: {exc}"
            return "ok"

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(predict, (0.0, 1.0)))
        assert outcomes[1] == "ok", outcomes
        refused = outcomes[0]
        if transport == "json":  # 503 reads back as NotReady on the client side
            assert "--max-in-flight 1" in refused, outcomes
        else:
            assert refused.startswith(TooLarge.__name__), outcomes  # RESOURCE_EXHAUSTED
        with connect(transport, server.address, timeout=60) as client:
            assert len(client.predict("iris", rows).prediction.class_ids) == 1  # type: ignore[union-attr]


def test_an_overloaded_http_server_says_when_to_retry():
    """Two overlapping requests at --max-in-flight 1: one 200, the other 503 at once with
    Retry-After and a JSON body naming the limit (whichever arrived second)."""
    args = ("--models", "iris", "--max-in-flight", "1", "--inject-delay-ms", "4000")
    body = json.dumps({"instances": samples.iris_rows(1)[0].tolist()}).encode()
    with ServerProcess("json", args) as server:
        first = raw_request(server.address, len(body), body)
        time.sleep(1.0)
        second = raw_request(server.address, len(body), body)
        with first, second:
            replies = [read_reply(sock) for sock in (second, first)]
    heads = sorted(r.partition(b"\r\n\r\n")[0] for r in replies)
    assert heads[0].startswith(b"HTTP/1.1 200") and heads[1].startswith(b"HTTP/1.1 503"), heads
    assert b"retry-after: 1" in heads[1].lower()
    refused = next(r for r in replies if r.startswith(b"HTTP/1.1 503"))
    error = json.loads(refused.partition(b"\r\n\r\n")[2])
    assert error["field"] == "server" and "--max-in-flight 1" in error["error"]
