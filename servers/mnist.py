"""MNIST: a small Keras CNN (test accuracy in artefacts/MANIFEST.json), 28x28 uint8 in."""

from __future__ import annotations

import numpy as np

from wiremark.payloads.contract import Classes, Family

from .compiled import CompiledKeras
from .runner import ARTEFACTS, Runner


class MnistCNN(Runner):
    name = "mnist"
    family = Family.DIGITS
    input_spec = "28x28 uint8 grey images, as 784 raw bytes or as 28x28 numbers 0..255"
    output_spec = "per image: class_id (the digit) and 10 float32 probabilities"

    def __init__(self, device: str) -> None:
        super().__init__(device)
        compiled = CompiledKeras(
            ARTEFACTS / "mnist_cnn.keras", ARTEFACTS / "mnist_cnn.tflite", device
        )
        self.runtime_package = compiled.runtime
        self._forward = compiled.forward

    def predict(self, batch: np.ndarray) -> Classes:  # type: ignore[override]
        probabilities = self._forward(batch)
        return Classes(probabilities.argmax(axis=1), probabilities)

    def sample(self) -> np.ndarray:
        from wiremark.payloads.samples import mnist_digits

        return mnist_digits(2)[0]
