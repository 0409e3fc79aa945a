"""The harness's clients turn every foreign failure into the one error hierarchy."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from wiremark.harness.clients import connect
from wiremark.payloads import errors, samples
from wiremark.payloads.contract import Family

from .conftest import MAX_BATCH, TRANSPORTS, refused_address


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_errors_arrive_as_their_class(transport, clients):
    client = clients[transport]
    with pytest.raises(errors.UnknownModel, match="resnet"):
        client.predict("resnet", samples.iris_rows(1)[0], family=Family.TABULAR)
    nan = np.array([[5.1, np.nan, 1.4, 0.2]], dtype=np.float32)
    with pytest.raises(errors.InvalidInput) as err:
        client.predict("iris", nan)
    assert err.value.field in ("instances[0]", "rows[0]", "inputs['features']")
    with pytest.raises(errors.TooLarge):
        client.predict("iris", samples.iris_rows(MAX_BATCH + 1)[0])
    assert client.predict("iris", samples.iris_rows(1)[0]).prediction.class_ids.tolist() == [0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nobody_listening_is_unreachable(transport):
    with pytest.raises(errors.Unreachable):
        client = connect(transport, refused_address(), timeout=1)
        client.predict("iris", samples.iris_rows(1)[0])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metadata_through_the_client(transport, clients):
    """Each API's own metadata: wiremark's typed message, TF Serving's REST metadata (with
    wiremark's beside it), TF Serving's gRPC signature_def."""
    meta = clients[transport].metadata("iris")
    if transport == "grpc":
        assert meta["name"] == "iris" and meta["device"] == "/CPU:0"
        assert meta["versions"]["numpy"]
    elif transport == "tfs-grpc":
        assert meta["model_spec"]["name"] == "iris"
        assert meta["signature_def"]["serving_default"]["inputs"]["features"]["dtype"] == "DT_FLOAT"
    else:
        assert meta["model_spec"]["name"] == "iris"
        own = meta["metadata"]["wiremark"]
        assert own["name"] == "iris" and own["device"] == "/CPU:0" and own["versions"]["numpy"]


def test_every_status_maps_back_to_its_class():
    for cls, status in errors.HTTP_STATUS.items():
        back = errors.from_http(status, {"error": "m", "field": "f"})  # TF Serving's body
        # a status several classes share (400, 404) comes back as one of them
        if cls is not errors.Unreachable:
            assert errors.HTTP_STATUS[type(back)] == status, cls
        assert back.message == "m" and back.field == "f"
    assert type(errors.from_http(502, None)) is errors.ServerFault
    assert (
        type(errors.from_grpc(grpc.StatusCode.NOT_FOUND, "model: no model")) is errors.UnknownModel
    )
    assert errors.from_grpc(grpc.StatusCode.INVALID_ARGUMENT, "rows[0]: bad").field == "rows[0]"
    assert (
        type(errors.from_grpc(grpc.StatusCode.UNAVAILABLE, "failed to connect"))
        is errors.Unreachable
    )
    assert (
        type(errors.from_grpc(grpc.StatusCode.UNAVAILABLE, "models are still loading"))
        is errors.NotReady
    )
    assert type(errors.from_grpc(grpc.StatusCode.INTERNAL, "boom")) is errors.ServerFault
    assert (
        type(errors.from_grpc(grpc.StatusCode.DEADLINE_EXCEEDED, None)) is errors.DeadlineExceeded
    )
