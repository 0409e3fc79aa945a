"""The REST transports as TF Serving's REST API documents it
(https://www.tensorflow.org/tfx/serving/api_rest), sent as curl sends it (`curl -d`: a
form Content-Type with a JSON body): row and columnar formats, `signature_name`, the
versions and labels routes, model status and metadata, and TF Serving's error bodies and
statuses. Each case checks the status code and the body's shape."""

from __future__ import annotations

import base64

import httpx
import pytest

from wiremark.payloads import samples

CURL = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def api(servers):
    with httpx.Client(
        base_url=f"http://{servers['json'].address}", timeout=60, trust_env=False
    ) as client:
        yield client


def curl(api, path, body: str | None = None) -> httpx.Response:
    if body is None:
        return api.get(path)
    return api.post(path, content=body.encode(), headers=CURL)


def classes(predictions):
    return [p["class_id"] for p in predictions]


def test_row_format(api):
    reply = curl(api, "/v1/models/iris:predict", '{"instances": [[5.1, 3.5, 1.4, 0.2]]}')
    assert reply.status_code == 200, reply.text
    (prediction,) = reply.json()["predictions"]
    assert prediction["class_id"] == 0 and len(prediction["probabilities"]) == 3


def test_row_format_with_named_inputs(api):
    body = '{"instances": [{"features": [5.1, 3.5, 1.4, 0.2]}, {"features": [6.7, 3, 5.2, 2.3]}]}'
    reply = curl(api, "/v1/models/iris:predict", body)
    assert reply.status_code == 200, reply.text
    assert classes(reply.json()["predictions"]) == [0, 2]


@pytest.mark.parametrize(
    "inputs",
    [
        "[[5.1, 3.5, 1.4, 0.2], [6.7, 3, 5.2, 2.3]]",
        '{"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3, 5.2, 2.3]]}',
    ],
    ids=["value", "named"],
)
def test_columnar_format_is_answered_in_outputs(api, inputs):
    reply = curl(api, "/v1/models/iris:predict", f'{{"inputs": {inputs}}}')
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"outputs"}
    assert body["outputs"]["class_id"] == [0, 2] and len(body["outputs"]["probabilities"]) == 2


def test_columnar_faces_with_named_inputs(api):
    image = samples.face_images((160,))[0]
    b64 = base64.b64encode(image.data).decode()
    body = f'{{"inputs": {{"image": [{{"b64": "{b64}"}}], "image_id": ["mine"]}}}}'
    reply = curl(api, "/v1/models/face:predict", body)
    assert reply.status_code == 200, reply.text
    outputs = reply.json()["outputs"]
    assert outputs["image_id"] == ["mine"] and isinstance(outputs["faces"][0], list)


def test_both_formats_at_once_are_refused(api):
    body = '{"instances": [[5.1, 3.5, 1.4, 0.2]], "inputs": [[5.1, 3.5, 1.4, 0.2]]}'
    reply = curl(api, "/v1/models/iris:predict", body)
    assert reply.status_code == 400
    assert "not both" in reply.json()["error"]


@pytest.mark.parametrize(("name", "status"), [("serving_default", 200), ("no_such_signature", 404)])
def test_signature_name(api, name, status):
    body = f'{{"signature_name": "{name}", "instances": [[5.1, 3.5, 1.4, 0.2]]}}'
    reply = curl(api, "/v1/models/iris:predict", body)
    assert reply.status_code == status, reply.text
    if status != 200:
        assert name in reply.json()["error"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/models/iris/versions/1:predict", 200),
        ("/v1/models/iris/labels/stable:predict", 200),
        ("/v1/models/iris/versions/2:predict", 404),
        ("/v1/models/iris/labels/canary:predict", 404),
        ("/v1/models/resnet/versions/1:predict", 404),
    ],
)
def test_versions_and_labels(api, path, status):
    reply = curl(api, path, '{"instances": [[5.1, 3.5, 1.4, 0.2]]}')
    assert reply.status_code == status, reply.text
    if status == 200:
        assert classes(reply.json()["predictions"]) == [0]
    else:
        assert set(reply.json()) <= {"error", "field"} and reply.json()["error"]


@pytest.mark.parametrize(
    "path", ["/v1/models/mnist", "/v1/models/mnist/versions/1", "/v1/models/mnist/labels/stable"]
)
def test_model_status(api, path):
    reply = curl(api, path)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


@pytest.mark.parametrize(
    "path", ["/v1/models/iris/metadata", "/v1/models/iris/versions/1/metadata"]
)
def test_model_metadata(api, path):
    reply = curl(api, path)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    features = signature["inputs"]["features"]
    assert features["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in features["tensor_shape"]["dim"]] == ["-1", "4"]
    assert set(signature["outputs"]) == {"class_id", "probabilities"}


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_classify_and_regress_need_their_signatures(api, verb):
    reply = curl(api, f"/v1/models/iris:{verb}", '{"examples": [{"x": 1}]}')
    assert reply.status_code == 400
    assert f"tensorflow/serving/{verb}" in reply.json()["error"]


def test_errors_come_as_tf_serving_writes_them(api):
    reply = curl(api, "/v1/models/iris:predict", '{"instances": [[5.1, 3.5, 1.4]]}')
    assert reply.status_code == 400  # INVALID_ARGUMENT
    assert isinstance(reply.json()["error"], str) and reply.json()["field"] == "instances[0]"
    many = '{"instances": [' + ", ".join(["[5.1, 3.5, 1.4, 0.2]"] * 65) + "]}"
    assert curl(api, "/v1/models/iris:predict", many).status_code == 429  # RESOURCE_EXHAUSTED
    unknown = curl(api, "/v1/models/resnet:predict", '{"instances": [[1, 2, 3, 4]]}')
    assert unknown.status_code == 404  # NOT_FOUND


def test_nan_tokens_parse_and_the_model_says_why_it_refuses(api):
    """TF Serving's JSON dialect has NaN and Infinity; the error is about the value, not
    the JSON (a model here answers only finite features: see the README)."""
    for token in ("NaN", "Infinity", "-Infinity"):
        reply = curl(api, "/v1/models/iris:predict", f'{{"instances": [[{token}, 3.5, 1.4, 0.2]]}}')
        assert reply.status_code == 400
        assert "finite" in reply.json()["error"] and reply.json()["field"] == "instances[0]"


def test_a_predict_route_asked_with_get_is_405_with_allow(api):
    reply = curl(api, "/v1/models/iris:predict")
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"


def test_msgpack_speaks_the_same_formats(servers):
    import msgpack

    with httpx.Client(base_url=f"http://{servers['msgpack'].address}", trust_env=False) as c:
        body = msgpack.packb({"inputs": {"features": [ROW, ROW]}})
        reply = c.post(
            "/v1/models/iris:predict", content=body, headers={"content-type": "application/msgpack"}
        )
        assert reply.status_code == 200
        assert msgpack.unpackb(reply.content)["outputs"]["class_id"] == [0, 0]
