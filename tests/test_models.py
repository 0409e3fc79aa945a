"""The served artefacts are the trained models: the LiteRT flatbuffers that serve on the
CPU agree with their Keras sources, and the models are accurate on real data."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from wiremark.payloads import samples
from wiremark.servers.runner import ARTEFACTS


@pytest.mark.parametrize(
    ("model", "artefact", "inputs"),
    [("iris", "iris_mlp", samples.iris_rows), ("mnist", "mnist_cnn", samples.mnist_digits)],
)
def test_litert_path_agrees_with_keras(model, artefact, inputs, reference):
    x, labels = inputs()
    source = keras.saving.load_model(ARTEFACTS / f"{artefact}.keras", compile=False)
    want = source(x, training=False).numpy()
    got = reference[model].predict(x)
    assert reference[model].metadata()["runtime"].startswith("ai-edge-litert")
    np.testing.assert_array_equal(got.class_ids, want.argmax(axis=1))
    np.testing.assert_allclose(got.probabilities, want, rtol=0, atol=1e-5)
    assert (got.class_ids == labels).mean() > 0.95


def test_one_row_and_full_batches_interleave(reference):
    # The interpreter re-plans its tensors when the batch size changes; answers must not.
    rows, _ = samples.iris_rows()
    runner = reference["iris"]
    whole = runner.predict(rows).probabilities
    for i in (0, 77, 149):
        np.testing.assert_allclose(
            runner.predict(rows[i : i + 1]).probabilities[0], whole[i], atol=1e-6
        )
    np.testing.assert_allclose(runner.predict(rows).probabilities, whole, atol=0)


def test_a_face_in_an_image_over_the_size_cap_is_found_where_it_is(reference):
    """An image longer than MAX_SIDE is detected scaled down, its faces scaled back up: the
    astronaut's face at 4x the size comes back at 4x the place, within a few pixels of
    rounding per side."""
    import io

    from PIL import Image
    from skimage import data

    from wiremark.payloads.contract import EncodedImage
    from wiremark.servers.face import MAX_SIDE

    def photo(side: int) -> EncodedImage:
        buffer = io.BytesIO()
        Image.fromarray(data.astronaut()).resize((side, side)).save(buffer, format="JPEG")
        return EncodedImage(str(side), buffer.getvalue())

    small = 800
    (near,) = reference["face"].predict([photo(small)])[0].faces
    (far,) = reference["face"].predict([photo(4 * small)])[0].faces
    assert 4 * small > MAX_SIDE >= small
    np.testing.assert_allclose(np.array(far.box), 4 * np.array(near.box), atol=0.05 * 4 * small)
    np.testing.assert_allclose(
        np.array(far.landmarks), 4 * np.array(near.landmarks), atol=0.02 * 4 * small
    )
