"""gzip as a scenario dimension: every server accepts gzip requests; one started with
`--compression gzip` also compresses its replies. Bad gzip is a clear 400, an unknown
Content-Encoding a 415, and the server keeps serving."""

from __future__ import annotations

import gzip

import grpc
import httpx
import pytest

from wiremark.harness.launch import ServerProcess, running
from wiremark.payloads import grpc_codec, rest
from wiremark.payloads.contract import JSON, Family, grpc_path, predict_path
from wiremark.payloads.samples import iris_rows

ROWS = iris_rows(20)[0]


def json_body() -> bytes:
    return rest.dump_json(rest.encode_request(Family.TABULAR, ROWS, binary=False))


def post(address: str, body: bytes, **headers: str) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=30) as client:
        return client.post(
            f"http://{address}{predict_path('iris')}",
            content=body,
            headers={"content-type": JSON, **headers},
        )


@pytest.fixture(scope="module")
def gzip_servers():
    procs = {
        t: ServerProcess(t, ("--models", "iris", "--compression", "gzip")) for t in ("grpc", "json")
    }
    with running(procs.values()):
        yield procs


def test_gzip_requests_are_accepted_everywhere(servers, reference):
    plain = post(servers["json"].address, json_body())
    zipped = post(
        servers["json"].address, gzip.compress(json_body()), **{"content-encoding": "gzip"}
    )
    assert zipped.status_code == 200 and zipped.json() == plain.json()
    assert "content-encoding" not in zipped.headers  # this server does not compress replies


def test_gzip_server_compresses_http_replies(gzip_servers):
    address = gzip_servers["json"].address
    raw = httpx.Client(trust_env=False, timeout=30).post(  # ask for gzip, read raw bytes
        f"http://{address}{predict_path('iris')}",
        content=gzip.compress(json_body()),
        headers={"content-type": JSON, "content-encoding": "gzip", "accept-encoding": "gzip"},
    )
    assert raw.status_code == 200 and raw.headers["content-encoding"] == "gzip"
    assert len(raw.json()["predictions"]) == len(ROWS)  # httpx inflates it
    assert int(raw.headers["content-length"]) < len(raw.content)


def test_gzip_server_compresses_grpc_replies(gzip_servers):
    data = grpc_codec.encode_request(Family.TABULAR, "iris", ROWS).SerializeToString()
    with grpc.insecure_channel(
        gzip_servers["grpc"].address, compression=grpc.Compression.Gzip
    ) as channel:
        reply = channel.unary_unary(grpc_path("Classify"))(data, timeout=30)
    prediction = grpc_codec.decode_prediction(Family.TABULAR, reply)
    assert prediction.class_ids.shape == (len(ROWS),)


@pytest.mark.parametrize(
    ("body", "encoding", "status", "words"),
    [
        (b"not gzip at all", "gzip", 400, "not gzip"),
        (gzip.compress(json_body())[:-12], "gzip", 400, "truncated"),
        (json_body(), "br", 415, "Content-Encoding 'br'"),
    ],
)
def test_bad_encodings_are_clear_errors(servers, body, encoding, status, words):
    address = servers["json"].address
    bad = post(address, body, **{"content-encoding": encoding})
    assert bad.status_code == status and words in bad.json()["error"]
    assert post(address, json_body()).status_code == 200  # still serving


def test_a_gzip_bomb_is_refused(servers):
    from .conftest import MAX_BODY

    bomb = gzip.compress(b" " * (MAX_BODY * 4))  # small on the wire, huge inflated
    bad = post(servers["json"].address, bomb, **{"content-encoding": "gzip"})
    assert bad.status_code == 429 and "inflated" in bad.json()["error"]
