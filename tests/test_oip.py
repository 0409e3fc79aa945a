"""The Open Inference Protocol (KServe v2) as its users call it: Triton's own client
(`tritonclient.http` with its default binary tensors, `tritonclient.grpc`) against wiremark's
`oip-rest` and `oip-grpc` servers on loopback; every route's bad input answered with a 4xx
or INVALID_ARGUMENT naming the problem, the server serving on."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from wiremark.harness import scenario as scenarios
from wiremark.harness.launch import ServerProcess, running
from wiremark.payloads import oip, samples
from wiremark.payloads.contract import Family, PixelEncoding
from wiremark.payloads.errors import InvalidInput, MalformedBody

from .cli import wiremark

MODELS = "iris,mnist,face"


@pytest.fixture(scope="module")
def oip_servers() -> Iterator[dict[str, ServerProcess]]:
    procs = {t: ServerProcess(t, ("--models", MODELS)) for t in ("oip-rest", "oip-grpc")}
    with running(procs.values()):
        yield procs


@pytest.fixture(scope="module")
def rest(oip_servers):
    client = triton_http.InferenceServerClient(oip_servers["oip-rest"].address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def rpc(oip_servers):
    client = triton_grpc.InferenceServerClient(oip_servers["oip-grpc"].address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def http(oip_servers) -> Iterator[httpx.Client]:
    base = f"http://{oip_servers['oip-rest'].address}"
    with httpx.Client(base_url=base, timeout=60, trust_env=False) as client:
        yield client


def _input(module, name, array, datatype, **kwargs):
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, **kwargs)
    return tensor


def _outputs(module, names=("predict", "predict_proba"), **kwargs):
    return [module.InferRequestedOutput(n, **kwargs) for n in names]


def _same_classes(result, want):
    np.testing.assert_array_equal(result.as_numpy("predict"), want.class_ids)
    np.testing.assert_array_equal(result.as_numpy("predict_proba"), want.probabilities)


# ----------------------------------------------------------------------- tritonclient


def test_server_metadata_lists_the_binary_tensor_extension(rest, rpc):
    assert rest.is_server_live() and rest.is_server_ready()
    assert rpc.is_server_live() and rpc.is_server_ready()
    assert "binary_tensor_data" in rest.get_server_metadata()["extensions"]
    assert "binary_tensor_data" in rpc.get_server_metadata().extensions
    assert rest.is_model_ready("mnist") and rpc.is_model_ready("mnist", "1")
    assert not rest.is_model_ready("nope")


def test_model_metadata_names_and_types_every_tensor(rest, rpc):
    expected = {
        "iris": ([("features", "FP32", [-1, 4])], [("predict", "INT64", [-1])]),
        "mnist": ([("image", "UINT8", [-1, 28, 28])], [("predict_proba", "FP32", [-1, 10])]),
        "face": ([("image", "BYTES", [-1])], [("box", "INT32", [-1, 4])]),
    }
    for model, (inputs, outputs) in expected.items():
        for meta in (rest.get_model_metadata(model), rpc.get_model_metadata(model, as_json=True)):
            got_in = [
                (t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]
            ]
            got_out = [
                (t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["outputs"]
            ]
            assert inputs[0] == got_in[0]
            assert outputs[0] in got_out
            assert meta["versions"] == ["1"]


def test_http_default_binary_tensors_give_the_in_process_iris_classes(rest, reference):
    rows, _ = samples.iris_rows()
    assert len(rows) == 150
    want = reference["iris"].predict(rows)
    # tritonclient's defaults: binary input, no outputs named (all come back binary)
    result = rest.infer("iris", [_input(triton_http, "features", rows, "FP32")])
    _same_classes(result, want)
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 150 * 8
    # JSON tensors both ways
    plain = rest.infer(
        "iris",
        [_input(triton_http, "features", rows, "FP32", binary_data=False)],
        outputs=_outputs(triton_http, binary_data=False),
    )
    _same_classes(plain, want)


def test_http_mnist_uint8_and_fp32_digits_match_the_in_process_model(rest, reference):
    digits, _ = samples.mnist_digits(100)
    want = reference["mnist"].predict(digits)
    result = rest.infer("mnist", [_input(triton_http, "image", digits, "UINT8")])
    _same_classes(result, want)
    scaled = (digits / 255.0).astype(np.float32)
    result = rest.infer(
        "mnist", [_input(triton_http, "image", scaled, "FP32")], outputs=_outputs(triton_http)
    )
    _same_classes(result, want)


def test_grpc_raw_contents_match_the_in_process_models(rpc, reference):
    rows, _ = samples.iris_rows()
    result = rpc.infer(
        "iris", [_input(triton_grpc, "features", rows, "FP32")], outputs=_outputs(triton_grpc)
    )
    _same_classes(result, reference["iris"].predict(rows))
    digits, _ = samples.mnist_digits(100)
    result = rpc.infer("mnist", [_input(triton_grpc, "image", digits, "UINT8")])
    _same_classes(result, reference["mnist"].predict(digits))
    # the reply keeps the order the outputs were asked in
    result = rpc.infer(
        "mnist",
        [_input(triton_grpc, "image", digits[:3], "UINT8")],
        outputs=_outputs(triton_grpc, ("predict_proba", "predict")),
    )
    assert [o.name for o in result.get_response().outputs] == ["predict_proba", "predict"]
    _same_classes(result, reference["mnist"].predict(digits[:3]))


def test_faces_over_both_wires(rest, rpc, reference):
    images = samples.face_images(sizes=(320,))[:2]
    want = reference["face"].predict(images)
    blobs = np.array([i.data for i in images], dtype=np.object_)
    for module, client in ((triton_http, rest), (triton_grpc, rpc)):
        result = client.infer("face", [_input(module, "image", blobs, "BYTES")])
        boxes = result.as_numpy("box")
        assert len(boxes) == sum(len(i.faces) for i in want) > 0
        assert boxes.tolist() == [list(f.box) for i in want for f in i.faces]
        assert result.as_numpy("image_id").tolist() == [b"0", b"1"]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies_are_inflated(rest, reference, algorithm):
    rows, _ = samples.iris_rows(20)
    result = rest.infer(
        "iris",
        [_input(triton_http, "features", rows, "FP32")],
        request_compression_algorithm=algorithm,
    )
    _same_classes(result, reference["iris"].predict(rows))


def test_the_harness_clients_on_both_encodings(oip_servers, reference):
    from wiremark.harness.clients import connect

    rows, _ = samples.iris_rows(10)
    digits, _ = samples.mnist_digits(10)
    for transport, proc in oip_servers.items():
        with connect(transport, proc.address) as client:
            for encoding in PixelEncoding:
                reply = client.predict("iris", rows, encoding)
                np.testing.assert_array_equal(
                    reply.prediction.class_ids, reference["iris"].predict(rows).class_ids
                )
                reply = client.predict("mnist", digits, encoding)
                np.testing.assert_array_equal(
                    reply.prediction.probabilities, reference["mnist"].predict(digits).probabilities
                )
                assert {"decode", "infer", "encode"} <= set(reply.server_ms)
            # JSON tensors are bigger than binary ones on REST; the same on gRPC within framing
            raw = client.predict("mnist", digits, PixelEncoding.RAW).request_bytes
            listed = client.predict("mnist", digits, PixelEncoding.LIST).request_bytes
            assert listed > raw if transport == "oip-rest" else listed >= raw


def test_bench_measures_oip_servers_it_did_not_start(oip_servers, tmp_path):
    """`--target oip-rest=... --target oip-grpc=...`: servers bench did not start, checked
    against the in-process models first, then measured in both tensor encodings."""
    scenario = tmp_path / "oip.toml"
    scenario.write_text(
        """[scenario]
name = "oip-target"
models = ["iris"]
transports = ["oip-rest", "oip-grpc"]
concurrency = [2]
encodings = ["raw", "list"]
duration_s = 1
max_duration_s = 4
warmup_s = 0.5
min_requests = 5
"""
    )
    targets = [f"--target={t}={p.address}" for t, p in oip_servers.items()]
    out = tmp_path / "out"
    result = wiremark("bench", "--scenario", scenario, *targets, "--out", out, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "results.json").read_text())
    assert {(c["transport"], c["passed"]) for c in run["conformance"]} == {
        ("oip-rest", True),
        ("oip-grpc", True),
    }
    cells = {(c["transport"], c["encoding"]): c for c in run["cells"]}
    assert set(cells) == {(t, e) for t in oip_servers for e in ("raw", "list")}
    assert all(c["valid"] for c in cells.values())
    # binary tensors are smaller than JSON ones on REST
    assert cells["oip-rest", "raw"]["request_bytes"] != cells["oip-rest", "list"]["request_bytes"]


# ---------------------------------------------------------------------- bad input, REST


def _binary(rows: np.ndarray, size: int | None = None, header: dict | None = None):
    blob = rows.astype(np.float32).tobytes()
    doc = header or {
        "inputs": [
            {
                "name": "features",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(blob) if size is None else size},
            }
        ]
    }
    text = json.dumps(doc).encode()
    return text + blob, len(text)


def _json_body(**tensor):
    base = {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    return json.dumps({"inputs": [{**base, **tensor}]}).encode()


ROWS = samples.iris_rows(2)[0]
BODY, LENGTH = _binary(ROWS)

REST_BAD = {
    "wrong datatype": (_json_body(datatype="FP64"), {}, 400, "expects FP32"),
    "unknown datatype": (_json_body(datatype="FLOAT"), {}, 400, "datatype"),
    "wrong shape": (_json_body(shape=[1, 5], data=[1, 2, 3, 4, 5]), {}, 400, "[-1,4]"),
    "shape and data disagree": (_json_body(shape=[2, 4]), {}, 400, "4 elements for shape"),
    "ragged data": (_json_body(data=[[1, 2], [3]]), {}, 400, "ragged"),
    "strings as numbers": (_json_body(data=["a", "b", "c", "d"]), {}, 400, "not FP32"),
    "NaN": (_json_body(data=[1, 2, 3, float("nan")]), {}, 400, "invalid JSON"),
    "unknown input": (_json_body(name="x"), {}, 400, "unknown input 'x'"),
    "unknown output": (
        json.dumps(
            {"inputs": json.loads(_json_body())["inputs"], "outputs": [{"name": "logits"}]}
        ).encode(),
        {},
        400,
        "unknown output 'logits'",
    ),
    "no inputs": (b'{"inputs": []}', {}, 400, "inputs"),
    "not JSON": (b"\x00\x01garbage", {}, 400, "Inference-Header-Content-Length"),
    "binary_data_size too big": (
        _binary(ROWS, size=33)[0],
        {"inference-header-content-length": str(_binary(ROWS, size=33)[1])},
        400,
        "runs past the body",
    ),
    "binary_data_size too small": (
        _binary(ROWS, size=16)[0],
        {"inference-header-content-length": str(_binary(ROWS, size=16)[1])},
        400,
        "16 bytes of FP32 data for shape [2, 4] (32 expected)",
    ),
    "bytes after the tensors": (
        BODY + b"xx",
        {"inference-header-content-length": str(LENGTH)},
        400,
        "add up to 32 bytes, but 34 follow",
    ),
    "missing header": (BODY, {}, 400, "Inference-Header-Content-Length"),
    "header past the body": (
        BODY,
        {"inference-header-content-length": str(len(BODY) + 10)},
        400,
        "does not fit",
    ),
    "header not a number": (BODY, {"inference-header-content-length": "ten"}, 400, "not a number"),
    "truncated body": (
        BODY[:-5],
        {"inference-header-content-length": str(LENGTH)},
        400,
        "runs past the body",
    ),
    "binary tensor of the wrong shape": (
        _binary(ROWS[:, :3].copy())[0],
        {"inference-header-content-length": str(_binary(ROWS[:, :3].copy())[1])},
        400,
        "expects shape",
    ),
    "corrupt gzip": (b"not gzip", {"content-encoding": "gzip"}, 400, "gzip"),
    "unknown encoding": (_json_body(), {"content-encoding": "br"}, 415, "deflate"),
}


@pytest.mark.parametrize("case", REST_BAD, ids=list(REST_BAD))
def test_rest_bad_input_is_a_4xx_naming_the_problem(http, reference, case):
    body, headers, status, words = REST_BAD[case]
    reply = http.post("/v2/models/iris/infer", content=body, headers=headers)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"] + reply.json().get("field", ""), reply.json()
    still_serving(http, reference)


def test_rest_unknown_models_versions_and_routes(http):
    for method, path, status, words in (
        ("POST", "/v2/models/nope/infer", 404, "no model named 'nope'"),
        ("POST", "/v2/models/iris/versions/7/infer", 404, "no version '7'"),
        ("GET", "/v2/models/nope", 404, "nope"),
        ("GET", "/v2/models/iris/versions/2", 404, "version"),
        ("GET", "/v2/models/nope/ready", 404, "nope"),
    ):
        reply = http.request(method, path, content=_json_body() if method == "POST" else None)
        assert reply.status_code == status, (path, reply.text)
        assert words in reply.json()["error"], (path, reply.json())
    assert http.get("/v2/models/iris/versions/1/ready").json() == {"name": "iris", "ready": True}
    assert http.get("/v2/health/live").json() == {"live": True}


def test_rest_bodies_above_the_limits_are_refused(http):
    rows = samples.iris_rows(257)[0]
    body, length = _binary(rows)
    reply = http.post(
        "/v2/models/iris/infer",
        content=body,
        headers={"inference-header-content-length": str(length)},
    )
    assert reply.status_code == 429 and "exceeds the limit of 256" in reply.json()["error"]


def still_serving(http: httpx.Client, reference) -> None:
    rows = samples.iris_rows(3)[0]
    body, length = _binary(rows)
    reply = http.post(
        "/v2/models/iris/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(length)},
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"  # no binary outputs asked
    assert [o["data"] for o in reply.json()["outputs"] if o["name"] == "predict"] == [
        reference["iris"].predict(rows).class_ids.tolist()
    ]


# ---------------------------------------------------------------------- bad input, gRPC


def _grpc_request(**tensor):
    m = oip.messages()
    request = m.ModelInferRequest(model_name=tensor.pop("model", "iris"))
    item = request.inputs.add(
        name=tensor.get("name", "features"),
        datatype=tensor.get("datatype", "FP32"),
        shape=tensor.get("shape", [1, 4]),
    )
    raw = tensor.get("raw", [np.ones(4, np.float32).tobytes()])
    if raw is None:
        item.contents.fp32_contents.extend(tensor.get("fp32", [1, 2, 3, 4]))
    else:
        request.raw_input_contents.extend(raw)
    return request.SerializeToString()


GRPC_BAD = {
    "wrong datatype": (_grpc_request(datatype="INT64"), "INVALID_ARGUMENT", "expects FP32"),
    "wrong shape": (_grpc_request(shape=[1, 3]), "INVALID_ARGUMENT", "[-1,4]"),
    "raw size for the shape": (
        _grpc_request(shape=[2, 4]),
        "INVALID_ARGUMENT",
        "16 bytes of FP32 data for shape [2, 4]",
    ),
    "raw count": (
        _grpc_request(raw=[b"", b""]),
        "INVALID_ARGUMENT",
        "2 raw_input_contents for 1 inputs",
    ),
    "typed contents count": (
        _grpc_request(raw=None, fp32=[1, 2]),
        "INVALID_ARGUMENT",
        "2 fp32_contents for shape [1, 4]",
    ),
    "unknown model": (_grpc_request(model="nope"), "NOT_FOUND", "no model named 'nope'"),
    "not a message": (b"\xff\xff\xff", "INVALID_ARGUMENT", "ModelInferRequest"),
}


@pytest.mark.parametrize("case", GRPC_BAD, ids=list(GRPC_BAD))
def test_grpc_bad_input_is_a_status_naming_the_problem(oip_servers, rpc, case):
    data, code, words = GRPC_BAD[case]
    address = oip_servers["oip-grpc"].address
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(oip.INFER_PATH)(data, timeout=30)
    assert caught.value.code().name == code
    assert words in caught.value.details()
    rows = samples.iris_rows(2)[0]
    assert rpc.infer("iris", [_input(triton_grpc, "features", rows, "FP32")]).as_numpy(
        "predict"
    ).tolist() == [0, 0]


def test_tritonclient_sees_the_errors_too(rest, rpc):
    rows = samples.iris_rows(2)[0].astype(np.float64)
    for module, client in ((triton_http, rest), (triton_grpc, rpc)):
        with pytest.raises(InferenceServerException, match="expects FP32"):
            client.infer("iris", [_input(module, "features", rows, "FP64")])


# ------------------------------------------------------------------------- the codec


def test_bytes_tensors_round_trip_and_refuse_short_data():
    values = np.array([b"", b"a", b"\x00" * 300], dtype=np.object_)
    blob = oip.to_bytes(values, "BYTES")
    assert blob[:4] == struct.pack("<I", 0)
    back = oip._from_bytes(blob, "BYTES", (3,), "x")
    assert back.tolist() == values.tolist()
    with pytest.raises(InvalidInput, match="runs past"):
        oip._from_bytes(blob[:-1], "BYTES", (3,), "x")
    with pytest.raises(InvalidInput, match="left after"):
        oip._from_bytes(blob + b"!", "BYTES", (3,), "x")


def test_reply_reader_finds_the_json_end_without_the_header():
    rows, _ = samples.iris_rows(4)
    body, length = oip.encode_rest_request(Family.TABULAR, rows)
    assert length is not None and oip.header_length_of(body) == length
    assert oip.header_length_of(b'{"a": 1}') is None
    with pytest.raises(MalformedBody):
        oip.header_length_of(b"\x00not json")


def test_encodings_choose_tensors_on_oip_and_pixels_elsewhere():
    scenario = scenarios.parse(
        {
            "scenario": {
                "models": ["iris", "mnist"],
                "transports": ["grpc", "oip-rest", "oip-grpc"],
                "encodings": ["raw", "list"],
            }
        }
    )
    cells = {(c.model, c.transport, c.encoding) for c in scenario.cells()}
    assert ("iris", "oip-rest", "list") in cells and ("iris", "oip-grpc", "list") in cells
    assert ("iris", "grpc", "list") not in cells  # no tensor encodings on wiremark's gRPC
    assert ("mnist", "grpc", "list") in cells  # but MNIST's pixel encodings
    label = next(c.label() for c in scenario.cells() if c.model == "iris" and c.encoding == "list")
    assert "list tensors" in label
