"""The compiled inference path of the Keras models (`iris`, `mnist`).

On the CPU a model runs as a LiteRT (TensorFlow Lite) flatbuffer converted from the Keras
artefact by scripts/train_models.py. Measured here on one core, a one-row iris call costs
about 4 us through LiteRT against about 450 us through the model's `tf.function` concrete
function once a server's own work sits between calls (175-270 us in a tight loop): the
eager runtime's call path is long and loses its caches between requests, and a transport
benchmark must not drown the transport in it. LiteRT runs in the calling thread, with one
thread of its own.

On a GPU (TensorFlow sees one and --device gpu|auto chose it) the same Keras artefact runs
through a `tf.function` with a fixed input signature. Either way the path is built once at
start-up; `model.predict()` never sits on the request path.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class CompiledKeras:
    """`forward(batch) -> probabilities` for one Keras artefact and its .tflite twin.
    `forward` is the compiled path itself, not a method around it: a runner binds it once,
    so a request pays for no extra call."""

    def __init__(self, keras_path: Path, tflite_path: Path, device: str) -> None:
        self.device = device
        if device.upper().startswith("/GPU"):
            self.runtime = "tensorflow"
            self.forward = self._build_tf(keras_path, device)
        else:
            self.runtime = "ai-edge-litert"
            self.forward = self._build_litert(tflite_path)

    @staticmethod
    def _build_tf(path: Path, device: str):  # type: ignore[no-untyped-def]
        import keras
        import tensorflow as tf

        with tf.device(device):
            model = keras.saving.load_model(path, compile=False)
            spec = model.inputs[0]
            concrete = tf.function(
                lambda x: model(x, training=False),
                input_signature=[tf.TensorSpec(spec.shape, spec.dtype)],
            ).get_concrete_function()

        def call(batch: np.ndarray) -> np.ndarray:
            with tf.device(device):
                return concrete(tf.constant(batch)).numpy()

        return call

    @staticmethod
    def _build_litert(path: Path):  # type: ignore[no-untyped-def]
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=1)
        source = interpreter.get_input_details()[0]["index"]
        sink = interpreter.get_output_details()[0]["index"]
        lock = threading.Lock()  # an interpreter serves one call at a time
        shape: list[tuple[int, ...]] = [()]
        set_tensor, invoke, get_tensor = (
            interpreter.set_tensor,
            interpreter.invoke,
            interpreter.get_tensor,
        )

        def call(batch: np.ndarray) -> np.ndarray:
            with lock:
                if batch.shape != shape[0]:  # re-plan tensors only when the batch size changes
                    interpreter.resize_tensor_input(source, list(batch.shape))
                    interpreter.allocate_tensors()
                    shape[0] = batch.shape
                set_tensor(source, batch)
                invoke()
                return get_tensor(sink)

        return call
