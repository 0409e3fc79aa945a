"""Iris: the Keras MLP (`iris`) and the tutorials' RandomForest (`iris_rf`)."""

from __future__ import annotations

import numpy as np

from wiremark.payloads.contract import Classes, Family

from .compiled import CompiledKeras
from .runner import ARTEFACTS, Runner

INPUT = "rows of 4 float32 features: sepal length, sepal width, petal length, petal width (cm)"
OUTPUT = "per row: class_id (0 setosa, 1 versicolor, 2 virginica) and 3 float32 probabilities"
SAMPLE = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


class IrisMLP(Runner):
    name = "iris"
    family = Family.TABULAR
    input_spec = INPUT
    output_spec = OUTPUT

    def __init__(self, device: str) -> None:
        super().__init__(device)
        compiled = CompiledKeras(
            ARTEFACTS / "iris_mlp.keras", ARTEFACTS / "iris_mlp.tflite", device
        )
        self.runtime_package = compiled.runtime
        self._forward = compiled.forward

    def predict(self, batch: np.ndarray) -> Classes:  # type: ignore[override]
        probabilities = self._forward(batch)
        return Classes(probabilities.argmax(axis=1), probabilities)

    def sample(self) -> np.ndarray:
        return SAMPLE


class IrisForest(Runner):
    """scikit-learn RandomForest, 100 trees, as the gRPC tutorials serve it. Fitted at
    start-up from scikit-learn's bundled iris with random_state=0 (about 0.2 s), so no
    pickle ties the project to one scikit-learn version."""

    name = "iris_rf"
    family = Family.TABULAR
    input_spec = INPUT
    output_spec = OUTPUT
    runtime_package = "scikit-learn"
    uses_tensorflow = False

    def __init__(self, device: str) -> None:
        super().__init__("cpu")  # scikit-learn runs on the CPU whatever --device says
        from sklearn.datasets import load_iris
        from sklearn.ensemble import RandomForestClassifier

        x, y = load_iris(return_X_y=True)
        self._model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)
        self._model.fit(x.astype(np.float32), y)

    def predict(self, batch: np.ndarray) -> Classes:  # type: ignore[override]
        probabilities = self._model.predict_proba(batch).astype(np.float32)
        return Classes(probabilities.argmax(axis=1), probabilities)

    def sample(self) -> np.ndarray:
        return SAMPLE
