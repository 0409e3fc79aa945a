"""TF Serving's gRPC API (`tfs-grpc`) as its users call it: the stubs, PredictRequest and
`tf.make_tensor_proto`, against a real server on loopback; TF Serving's errors; TensorProto
read and written without TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest

from wiremark.payloads import samples, tensors
from wiremark.payloads.contract import Limits
from wiremark.payloads.errors import InvalidInput, TooLarge
from wiremark.payloads.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from .wire import Rejected, grpc_raw


@pytest.fixture(scope="module")
def channel(servers):
    with grpc.insecure_channel(servers["tfs-grpc"].address) as opened:
        grpc.channel_ready_future(opened).result(timeout=10)
        yield opened


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def still_serving(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "iris"
    tensors.from_numpy(samples.iris_rows(2)[0], request.inputs["features"])
    reply = stub.Predict(request, 30)
    assert list(reply.outputs["class_id"].int64_val) == [0, 0]


def test_the_mnist_tutorial_client_gets_the_in_process_classes(stub, reference):
    """`../shared/seeds/002_*`'s client, line for line, but for the input key (the name the
    metadata gives) and the imports: TF Serving's stubs from this package (the
    tensorflow-serving-api wheel pulls in the full tensorflow), and types_pb2 from
    TensorFlow itself (the tutorial takes the same enum from tensorboard)."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    digits, _ = samples.mnist_digits(100)
    x_test = digits[..., np.newaxis].astype(np.float32) / 255.0  # the tutorial's scaling
    want = reference["mnist"].predict(digits).class_ids
    got = []
    for i in range(100):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.inputs["image"].CopyFrom(
            tf.make_tensor_proto(x_test[i], dtype=types_pb2.DT_FLOAT, shape=[28, 28, 1])
        )
        result = stub.Predict(request, 10.0)
        got.append(int(np.argmax(result.outputs["probabilities"].float_val)))
    assert got == want.tolist()
    # and TensorFlow reads the reply as TF Serving's: the same classes, one TensorProto class
    assert tf.make_ndarray(result.outputs["class_id"]).tolist() == [want[-1]]


def test_a_batch_in_each_dtype(stub, reference):
    digits, _ = samples.mnist_digits(16)
    want = reference["mnist"].predict(digits)
    for pixels in (digits[..., None], digits[..., None].astype(np.float32) / 255.0):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.model_spec.signature_name = "serving_default"
        tensors.from_numpy(pixels, request.inputs["image"])
        reply = stub.Predict(request, 30)
        assert list(reply.outputs["class_id"].int64_val) == want.class_ids.tolist()
        probabilities = np.asarray(reply.outputs["probabilities"].float_val, np.float32)
        np.testing.assert_array_equal(probabilities.reshape(16, 10), want.probabilities)
        assert reply.model_spec.name == "mnist" and reply.model_spec.version.value == 1


def test_output_filter_keeps_what_it_names(stub):
    request = predict_pb2.PredictRequest(output_filter=["class_id"])
    request.model_spec.name = "iris"
    tensors.from_numpy(samples.iris_rows(3)[0], request.inputs["features"])
    assert set(stub.Predict(request, 30).outputs) == {"class_id"}


def test_metadata_and_status_as_tf_serving_answers_them(stub, channel):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "face"
    reply = stub.GetModelMetadata(request, 30)
    mapping = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(mapping)
    signature = mapping.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert set(signature.inputs) == {"image", "image_id"}
    assert tensors.dtype_name(signature.inputs["image"].dtype) == "DT_STRING"
    assert {"box", "landmarks", "confidence"} <= set(signature.outputs)

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "iris"
    answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, 30)
    (version,) = answer.model_version_status
    assert version.version == 1 and version.state == version.AVAILABLE


def predict(model, inputs, **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for name, array in inputs.items():
        tensors.from_numpy(array, request.inputs[name])
    return request


ROWS = samples.iris_rows(2)[0]
# (case, request, status, words in the details)
CASES = [
    ("unknown model", predict("resnet", {"features": ROWS}), "NOT_FOUND", "resnet"),
    ("unknown version", predict("iris", {"features": ROWS}, version=7), "NOT_FOUND", "(iris, 7)"),
    (
        "unknown label",
        predict("iris", {"features": ROWS}, version_label="canary"),
        "NOT_FOUND",
        "Label(iris, canary)",
    ),
    (
        "unknown signature",
        predict("iris", {"features": ROWS}, signature_name="classify_x"),
        "NOT_FOUND",
        "classify_x",
    ),
    ("no model name", predict("", {"features": ROWS}), "INVALID_ARGUMENT", "model_spec.name"),
    ("missing input", predict("iris", {}), "INVALID_ARGUMENT", "missing input 'features'"),
    (
        "unknown input",
        predict("iris", {"features": ROWS, "x": ROWS}),
        "INVALID_ARGUMENT",
        "alias not found in signature: x",
    ),
    (
        "wrong dtype",
        predict("iris", {"features": ROWS.astype(np.float64)}),
        "INVALID_ARGUMENT",
        "inputs['features']: expects DT_FLOAT, but DT_DOUBLE",
    ),
    (
        "wrong shape",
        predict("iris", {"features": ROWS[:, :3]}),
        "INVALID_ARGUMENT",
        "inputs['features']: expects shape [N,4]",
    ),
    (
        "non-finite",
        predict("iris", {"features": np.full((1, 4), np.nan, np.float32)}),
        "INVALID_ARGUMENT",
        "finite",
    ),
    (
        "digit out of [0, 1]",
        predict("mnist", {"image": np.full((1, 28, 28, 1), 2.0, np.float32)}),
        "INVALID_ARGUMENT",
        "[0, 1]",
    ),
    (
        "digit shape",
        predict("mnist", {"image": np.zeros((1, 27, 28, 1), np.uint8)}),
        "INVALID_ARGUMENT",
        "inputs['image']: expects shape",
    ),
    (
        "image not decodable",
        predict("face", {"image": np.array([b"not an image"], dtype=object)}),
        "INVALID_ARGUMENT",
        "inputs['image'][0]",
    ),
    (
        "batch above the limit",
        predict("iris", {"features": samples.iris_rows(65)[0]}),
        "RESOURCE_EXHAUSTED",
        "holds 260 values",
    ),
]


@pytest.mark.parametrize(("case", "request_", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_tf_serving_errors(case, request_, status, words, stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request_, 30)
    assert caught.value.code().name == status, caught.value.details()
    assert words in caught.value.details()
    still_serving(stub)


def test_a_tensor_that_does_not_fill_its_shape(stub):
    request = predict("iris", {"features": ROWS})
    request.inputs["features"].tensor_shape.dim[0].size = 3  # 8 values cannot fill [3, 4]
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, 30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor_content holds 32 bytes" in caught.value.details()
    still_serving(stub)


def test_classify_and_metadata_misuse_are_clear(stub):
    with pytest.raises(grpc.RpcError) as caught:
        from wiremark.payloads.tensorflow_serving.apis import classification_pb2

        stub.Classify(classification_pb2.ClassificationRequest(), 30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "call Predict" in caught.value.details()
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "iris"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModelMetadata(request, 30)
    assert "metadata_field" in caught.value.details()
    still_serving(stub)


def test_wiremark_grpc_refuses_a_misrouted_predict_request(grpc_channel, stub):
    """A PredictRequest parses as an IrisRequest (its ModelSpec's bytes land in `model`):
    refused, saying what the method takes, not misread."""
    misrouted = predict("iris", {"features": ROWS}).SerializeToString()
    with pytest.raises(Rejected) as caught:
        grpc_raw(grpc_channel, "Classify", misrouted)
    assert caught.value.status is grpc.StatusCode.INVALID_ARGUMENT
    assert "wiremark.v1.IrisRequest" in caught.value.message
    assert "not a model name" in caught.value.message


# ------------------------------------------------------------------- TensorProto, no TF


def test_tensor_protos_round_trip_in_both_forms():
    for array in (
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(6, dtype=np.uint8).reshape(1, 2, 3),
        np.array([3, -1], dtype=np.int64),
        np.array([b"a", b"bc"], dtype=object),
    ):
        for typed in (False, True):
            back = tensors.to_numpy(tensors.from_numpy(array, typed=typed), "t", 100)
            assert back.dtype == array.dtype and back.shape == array.shape
            assert back.tolist() == array.tolist()


def test_one_typed_value_fills_the_shape_and_too_few_are_refused():
    tensor = tensors.tensor_proto()(dtype=tensors.dtype_value("DT_FLOAT"), float_val=[0.5])
    for size in (2, 3):
        tensor.tensor_shape.dim.add(size=size)
    assert tensors.to_numpy(tensor, "t", 100).tolist() == [[0.5] * 3] * 2
    tensor.float_val.append(1.0)
    with pytest.raises(InvalidInput, match="2 values in float_val for shape"):
        tensors.to_numpy(tensor, "t", 100)
    with pytest.raises(TooLarge, match="more than the 5"):
        tensors.to_numpy(tensor, "t", 5)  # a bound before anything is copied


def test_the_tf_serving_client_side_needs_no_tensorflow():
    """Building and reading TF Serving's messages imports no TensorFlow (7.9 s and 618 MB
    here), and the classes are TensorFlow's own once it is imported."""
    code = (
        "import sys\n"
        "from wiremark.payloads import tfs_codec, samples\n"
        "from wiremark.payloads.contract import Family\n"
        "r = tfs_codec.encode_request(Family.TABULAR, 'iris', samples.iris_rows(2)[0])\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "import tensorflow as tf\n"
        "t = tf.make_tensor_proto([[1.0, 2.0, 3.0, 4.0]], dtype=tf.float32)\n"
        "r.inputs['features'].CopyFrom(t)\n"
        "assert type(t) is type(r.inputs['features'])\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_decode_inputs_checks_the_declared_limits():
    from wiremark.payloads import tfs_codec
    from wiremark.payloads.contract import Family

    request = tfs_codec.encode_request(Family.TABULAR, "iris", samples.iris_rows(9)[0])
    with pytest.raises(TooLarge, match="holds 36 values"):
        tfs_codec.decode_inputs(Family.TABULAR, request.inputs, Limits(max_batch=2))
