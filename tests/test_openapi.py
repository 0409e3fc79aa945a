"""The HTTP server's OpenAPI document says what the server does (schemathesis's checks,
held here without it): every path parameter declared, the errors any route answers listed,
the real requests and replies of every model valid against the documented schemas, and the
requests the server refuses for their shape invalid against them."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import jsonschema
import pytest

from wiremark.payloads import samples
from wiremark.payloads import transport as registry
from wiremark.payloads.contract import JSON, MODEL_FAMILIES, PixelEncoding

MODELS = ("iris", "mnist", "face")


@pytest.fixture(scope="module")
def spec(servers, http_client) -> dict[str, Any]:
    return http_client.get(f"http://{servers['json'].address}/openapi.json").json()


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A validator of `schema` whose #/components references resolve in `spec`."""
    root = {**schema, "components": spec["components"]}
    return jsonschema.Draft202012Validator(root)


def body_schema(spec: dict[str, Any], path: str, part: str = "request") -> dict[str, Any]:
    operation = spec["paths"][path]["post"]
    if part == "request":
        return operation["requestBody"]["content"][JSON]["schema"]
    return operation["responses"]["200"]["content"][JSON]["schema"]


def test_every_path_parameter_is_declared_and_every_route_lists_its_errors(spec):
    for path, operations in spec["paths"].items():
        names = {part[1:-1] for part in path.replace(":", "/").split("/") if part[:1] == "{"}
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)
            if path.startswith(("/v1/models/", "/v2/models/")):
                assert {"400", "404", "503"} <= set(operation["responses"]), (method, path)
    version = spec["paths"]["/v1/models/iris/versions/{version}:predict"]["post"]["parameters"]
    assert version[0]["schema"]["pattern"] == "^[0-9]+$"  # "0.1.0" is no version


@pytest.mark.parametrize("model", MODELS)
def test_real_requests_and_replies_match_the_documented_schemas(spec, servers, model):
    path = f"/v1/models/{model}:predict"
    request = validator(spec, body_schema(spec, path))
    reply = validator(spec, body_schema(spec, path, "response"))
    family = MODEL_FAMILIES[model]
    codec = registry.get("json").codec
    for encoding in (PixelEncoding.RAW, PixelEncoding.LIST):
        body = codec.encode_request(family, model, samples.batch(family, 3), encoding)
        request.validate(json.loads(body))
        got = httpx.post(
            f"http://{servers['json'].address}{path}",
            content=body,
            headers={"content-type": JSON},
            timeout=60,
        )
        assert got.status_code == 200, got.text
        reply.validate(got.json())


def test_the_documented_schemas_refuse_what_the_server_refuses(spec):
    iris = validator(spec, body_schema(spec, "/v1/models/iris:predict"))
    row = [5.1, 3.5, 1.4, 0.2]
    for bad in (
        {"instances": []},  # an empty batch
        {"instances": [row], "inputs": [row]},  # both formats (TF Serving's rule)
        {"rows": [row]},  # neither
        {"instances": [[5.1, 3.5, 1.4]]},  # the wrong shape
        {"instances": [row], "signature_name": "other"},  # no such signature
        {"instances": [[1e39, 3.5, 1.4, 0.2]]},  # beyond float32
        {"inputs": {"features": [row], "extra": [row]}},  # no such input
    ):
        assert not iris.is_valid(bad), bad
    mnist = validator(spec, body_schema(spec, "/v1/models/mnist:predict"))
    short = base64.b64encode(bytes(100)).decode()
    assert not mnist.is_valid({"instances": [{"b64": short}]})  # not 784 bytes
    assert mnist.is_valid({"instances": [{"b64": base64.b64encode(bytes(784)).decode()}]})


def test_the_open_inference_routes_document_their_bodies(spec):
    path = "/v2/models/iris/infer"
    request = validator(spec, body_schema(spec, path))
    codec = registry.get("oip-rest").codec
    family = MODEL_FAMILIES["iris"]
    body = codec.encode_request(family, "iris", samples.batch(family, 2), PixelEncoding.LIST)
    request.validate(json.loads(body))
    assert not request.is_valid({"inputs": []})
