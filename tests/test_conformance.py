"""Every model x transport returns what the in-process runner returns: class ids exactly,
probabilities within 1e-6, boxes and landmarks exactly for the same bytes, confidence
within 1e-6. Also: every prediction carries the server's decode/infer/encode timings."""

from __future__ import annotations

import numpy as np
import pytest

from wiremark.payloads import samples
from wiremark.payloads.contract import Classes, PixelEncoding

from .conftest import TRANSPORTS


@pytest.fixture
def client(request, clients):
    return clients[request.param]


def assert_same_classes(got: Classes, want: Classes) -> None:
    np.testing.assert_array_equal(got.class_ids, want.class_ids)
    np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=0, atol=1e-6)
    assert got.probabilities.dtype == np.float32


@pytest.mark.parametrize("client", TRANSPORTS, indirect=True)
@pytest.mark.parametrize("model", ["iris", "iris_rf"])
def test_iris_matches_in_process(client, model, reference):
    rows, labels = samples.iris_rows()
    for start in range(0, len(rows), 50):
        batch = rows[start : start + 50]
        reply = client.predict(model, batch)
        assert_same_classes(reply.prediction, reference[model].predict(batch))
    # the models are real: nearly every bundled row is classified right
    assert (reference[model].predict(rows).class_ids == labels).mean() > 0.95


@pytest.mark.parametrize("client", TRANSPORTS, indirect=True)
@pytest.mark.parametrize("encoding", list(PixelEncoding))
def test_mnist_matches_in_process(client, encoding, reference):
    images, labels = samples.mnist_digits(128)
    for start in range(0, len(images), 64):
        batch = images[start : start + 64]
        reply = client.predict("mnist", batch, encoding)
        assert_same_classes(reply.prediction, reference["mnist"].predict(batch))
    assert (reference["mnist"].predict(images).class_ids == labels).mean() > 0.95


@pytest.mark.parametrize("client", TRANSPORTS, indirect=True)
def test_faces_match_in_process(client, reference):
    photos = samples.face_images(sizes=(160, 320))
    reply = client.predict("face", photos)
    want = reference["face"].predict(photos)
    assert [p.image_id for p in reply.prediction] == [p.image_id for p in photos]
    for got_image, want_image in zip(reply.prediction, want, strict=True):
        assert len(got_image.faces) == len(want_image.faces)
        for got, exp in zip(got_image.faces, want_image.faces, strict=True):
            assert got.box == exp.box
            assert got.landmarks == exp.landmarks
            assert abs(got.confidence - exp.confidence) <= 1e-6
    # astronaut and camera show a face, coffee does not
    found = {p.image_id: len(p.faces) for p in want}
    assert found["astronaut-320"] >= 1 and found["coffee-320"] == 0


@pytest.mark.parametrize("client", TRANSPORTS, indirect=True)
def test_every_prediction_reports_server_timings(client):
    reply = client.predict("iris", samples.iris_rows(1)[0])
    timing = reply.server_ms
    assert set(timing) == {"decode", "infer", "encode"}
    assert all(value >= 0 for value in timing.values())
    assert timing["infer"] > 0
