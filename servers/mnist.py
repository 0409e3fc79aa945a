"""MNIST: a small Keras CNN (test accuracy in artefacts/MANIFEST.json), 28x28 uint8 in."""

from __future__ import annotations

import numpy as np
from wiremark.payloads.contract import Classes, Family

from .runner import ARTEFACTS, Runner


class MnistCNN(Runner):
    name = "mnist"
    family = Family.DIGITS
    input_spec = "28x28 uint8 grey images, as 784 raw bytes or as 28x28 numbers 0..255"
    output_spec = "per image: class_id (the digit) and 10 float32 probabilities"

    def __init__(self, device: str) -> None:
        super().__init__(device)
        import keras
        import tensorflow as tf

        with tf.device(device):
            model = keras.saving.load_model(ARTEFACTS / "mnist_cnn.keras", compile=False)
            # The concrete function skips tf.function's per-call argument dispatch: about
            # half the latency of calling the tf.function on a one-row batch here.
            self._fn = tf.function(
                lambda x: model(x, training=False),
                input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8)],
            ).get_concrete_function()
        self._tf = tf

    def predict(self, batch: np.ndarray) -> Classes:  # type: ignore[override]
        with self._tf.device(self.device):
            probabilities = self._fn(self._tf.constant(batch)).numpy()
        return Classes(probabilities.argmax(axis=1), probabilities)

    def sample(self) -> np.ndarray:
        from wiremark.payloads.samples import mnist_digits

        return mnist_digits(2)[0]
