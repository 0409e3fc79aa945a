"""Choose where TensorFlow runs, once per process, before any model is built."""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)

DEVICES = ("cpu", "gpu", "auto")
CPU = "/CPU:0"


class DeviceError(RuntimeError):
    pass


def configure(request: str) -> str:
    """Apply `--device cpu|gpu|auto` and return the TensorFlow device used, e.g. "/CPU:0".

    TensorFlow's thread pools are sized to the cores this process may run on, so a server
    pinned with taskset does not oversubscribe its core.
    """
    if request not in DEVICES:
        raise DeviceError(f"unknown device {request!r}: choose one of {', '.join(DEVICES)}")
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, cores)))
    except RuntimeError:  # already initialised in this process (tests, second call)
        pass
    gpus = tf.config.list_physical_devices("GPU")
    if request == "cpu" or (request == "auto" and not gpus):
        if gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                log.warning("TensorFlow already initialised its GPUs; pinning ops to /CPU:0")
        return "/CPU:0"
    if not gpus:
        raise DeviceError(
            "--device gpu: TensorFlow sees no GPU (install wiremark[gpu] on a CUDA host, "
            "or use --device cpu)"
        )
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised
            tf.config.experimental.set_memory_growth(gpu, True)
    return "/GPU:0"
