"""A hostile client against every transport at once: one corpus of bad requests, built from
each transport's own codec (so a new transport is covered when it registers), sent raw to
servers of every registered transport with every model. Every request must get a refusal
that names the problem (an HTTP 4xx with a JSON `error`, or a gRPC status with details):
no 5xx, no INTERNAL or UNKNOWN, no accepted bad request, no dead server; the server serves
after; its memory grows by less than RSS_BOUND_MB. `pytest -s` prints the table:

    transport   inputs  refused  5xx/INTERNAL  accepted  crashed  RSS before  after (MB)
"""

from __future__ import annotations

import gzip
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import psutil
import pytest

from wiremark.harness.launch import ServerProcess, running
from wiremark.harness.transports import connect
from wiremark.payloads import samples
from wiremark.payloads import transport as registry
from wiremark.payloads.contract import MODEL_FAMILIES, EncodedImage, Family, PixelEncoding
from wiremark.payloads.errors import WiremarkError
from wiremark.payloads.transport import request_headers

from .test_bad_input import BOMB, TIFF, TINY

MAX_BATCH = 64
MAX_BODY = 1_000_000
ARGS = ("--models", "iris,mnist,face", "--max-batch", str(MAX_BATCH))
ARGS += ("--max-body-bytes", str(MAX_BODY))
RSS_BOUND_MB = 300  # what a server may keep after the whole corpus (a few MB of buffers)
MODELS = ("iris", "mnist", "face")
SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
GONE = {grpc.StatusCode.UNAVAILABLE}


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes
    headers: dict[str, str]


def valid(transport: registry.Transport, model: str, batch=None) -> bytes:
    family = MODEL_FAMILIES[model]
    batch = samples.batch(family, 2) if batch is None else batch
    return transport.codec.encode_request(family, model, batch, PixelEncoding.RAW)


def images(*blobs: bytes) -> list[EncodedImage]:
    return [EncodedImage(f"img{i}", blob) for i, blob in enumerate(blobs)]


def corpus(transport: registry.Transport) -> list[Case]:
    """The bad requests for one transport, from its codec: malformed, truncated, bombs
    (pixels, gzip, nesting), over-limit batches, hostile images, other APIs' messages,
    unknown models, and random bytes."""
    codec, grpc_wire = transport.codec, transport.wire == registry.WIRE_GRPC
    media = {} if grpc_wire else {"content-type": transport.media_type}
    rng = random.Random(15)
    cases: list[Case] = []

    def add(name: str, model: str, body: bytes, **headers: str) -> None:
        family = MODEL_FAMILIES.get(model, Family.TABULAR)
        try:  # the codec's own headers where it can make them for these bytes
            extra = {} if grpc_wire else request_headers(codec, body)
        except WiremarkError:
            extra = {}
        path = codec.route(family, model)
        cases.append(Case(f"{name} ({model})", path, body, media | extra | headers))

    for model in MODELS:
        good = valid(transport, model)
        add("truncated", model, good[: len(good) // 2])
        add("empty body", model, b"")
        add("random bytes", model, rng.randbytes(600))
        if not grpc_wire:  # protobuf skips what it does not know: only a text body can tell
            add("random bytes after a good body", model, good + rng.randbytes(40))
        big = samples.batch(MODEL_FAMILIES[model], MAX_BATCH + 1)
        add("batch over the limit", model, valid(transport, model, big))
        add("body over the limit", model, good + b" " * MAX_BODY)
        # another API's message for the same model, on this transport's route
        for other in registry.names():
            o = registry.get(other)
            if o.name != transport.name and o.wire == transport.wire and o.api != transport.api:
                add(f"a {o.api} message", model, valid(o, model))
    for name, blob in (("pixel bomb", BOMB), ("too small", TINY), ("TIFF", TIFF)):
        add(f"image: {name}", "face", valid(transport, "face", images(blob)))
    add("image: not an image", "face", valid(transport, "face", images(b"\xff\xd8garbage")))
    rows = samples.iris_rows(2)[0]
    add(
        "unknown model",
        "resnet",
        codec.encode_request(Family.TABULAR, "resnet", rows, PixelEncoding.RAW),
    )
    if not grpc_wire:
        nested = {"json": b"[" * 100_000 + b"]" * 100_000, "msgpack": b"\x91" * 100_000 + b"\x00"}
        for kind, bomb in nested.items():
            add(f"nesting bomb ({kind} syntax)", "iris", bomb)
        zeros = gzip.compress(b"\x00" * (50 * MAX_BODY), compresslevel=9)
        add("gzip bomb", "iris", zeros, **{"content-encoding": "gzip"})
        add("bad gzip", "iris", b"\x1f\x8b" + rng.randbytes(100), **{"content-encoding": "gzip"})
        if not getattr(codec, "any_content_type", False):  # OIP REST reads any, as Triton
            wrong = {"content-type": "text/csv"}
            add("wrong content type", "iris", valid(transport, "iris"), **wrong)
    return cases


def outcome_http(client: httpx.Client, address: str, case: Case) -> str:
    try:
        reply = client.post(f"http://{address}{case.path}", content=case.body, headers=case.headers)
    except httpx.TransportError:
        return "crashed"
    if reply.status_code >= 500:
        return "server error"
    if reply.status_code < 400:
        return "accepted"
    error = reply.json().get("error") if "json" in reply.headers.get("content-type", "") else None
    assert isinstance(error, str) and error, (case.name, reply.status_code, reply.text[:200])
    assert len(reply.content) < 2000, (case.name, "an error body echoes too much")
    return "refused"


def outcome_grpc(channel: grpc.Channel, case: Case) -> str:
    try:
        channel.unary_unary(case.path)(case.body, timeout=60)
    except grpc.RpcError as exc:
        if exc.code() in GONE:
            return "crashed"
        if exc.code() in SERVER_ERRORS:
            return "server error"
        assert exc.details(), (case.name, exc.code())
        assert len(exc.details()) < 2000, (case.name, "the details echo too much")
        return "refused"
    return "accepted"


def rss_mb(proc: ServerProcess) -> float:
    assert proc.proc is not None
    return psutil.Process(proc.proc.pid).memory_info().rss / 2**20


@pytest.fixture(scope="module")
def every_server() -> Iterator[dict[str, ServerProcess]]:
    procs = {t: ServerProcess(t, ARGS) for t in registry.names()}
    with running(procs.values()):
        yield procs


def test_every_transport_refuses_the_whole_corpus_and_serves_on(every_server, capsys):
    rows = []
    failures = []
    for name, proc in every_server.items():
        transport = registry.get(name)
        with connect(name, proc.address, timeout=60) as client:
            for model in MODELS:  # warm every model's path before the first figure
                client.predict(model, samples.batch(MODEL_FAMILIES[model], 1))
            before = rss_mb(proc)
            counts: Counter[str] = Counter()
            cases = corpus(transport)
            if transport.wire == registry.WIRE_GRPC:
                options = [("grpc.max_send_message_length", -1)]
                with grpc.insecure_channel(proc.address, options=options) as channel:
                    for case in cases:
                        got = outcome_grpc(channel, case)
                        counts[got] += 1
                        if got != "refused":
                            failures.append(f"{name}: {case.name}: {got}")
            else:
                with httpx.Client(trust_env=False, timeout=60) as http:
                    for case in cases:
                        got = outcome_http(http, proc.address, case)
                        counts[got] += 1
                        if got != "refused":
                            failures.append(f"{name}: {case.name}: {got}")
            assert proc.ended() is None, f"{name} server died: {proc.log_text()}"
            reply = client.predict("iris", samples.iris_rows(2)[0])  # and it serves on
            assert list(reply.prediction.class_ids) == [0, 0]
            after = rss_mb(proc)
        rows.append((name, len(cases), counts, before, after))
    with capsys.disabled():
        print("\ntransport  inputs  refused  5xx/INTERNAL  accepted  crashed  RSS before  after MB")
        for name, n, c, before, after in rows:
            print(
                f"{name:<10} {n:>6} {c['refused']:>8} {c['server error']:>13} "
                f"{c['accepted']:>9} {c['crashed']:>8} {before:>11.0f} {after:>9.0f}"
            )
    assert not failures, failures
    for name, _, _, before, after in rows:
        assert after - before < RSS_BOUND_MB, (name, before, after)
