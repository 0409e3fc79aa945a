"""The CLI explains bad requests in one line, without a traceback."""

from __future__ import annotations

import pytest

from .cli import wiremark


def test_unknown_model_is_a_usage_error():
    result = wiremark("serve", "--transport", "grpc", "--models", "iris,resnet")
    assert result.returncode == 2
    assert "unknown model(s) resnet" in result.stderr and "Traceback" not in result.stderr


def test_unknown_transport():
    result = wiremark("serve", "--transport", "soap")
    assert result.returncode == 2 and "invalid choice: 'soap'" in result.stderr


def test_port_in_use_is_reported():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = wiremark("serve", "--transport", "json", "--models", "iris", "--port", str(port))
    assert result.returncode == 2
    assert "wiremark: error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("transport", ["grpc", "json"])
def test_gpu_without_gpu_fails_cleanly(transport):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: --device gpu is valid here")
    result = wiremark("serve", "--transport", transport, "--models", "iris", "--device", "gpu")
    assert result.returncode == 2, result.stderr
    assert "TensorFlow sees no GPU" in result.stderr and "Traceback" not in result.stderr
