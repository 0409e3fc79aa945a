"""Health says NOT_SERVING while models load and SERVING after, also after load; SIGTERM
lets an in-flight request finish and the process exits 0; metadata reports the device."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from wiremark.harness.clients import connect
from wiremark.harness.launch import ServerProcess
from wiremark.payloads import samples
from wiremark.payloads import wiremark_pb2 as pb
from wiremark.payloads.contract import metadata_path

from .cli import wiremark
from .wire import grpc_raw


@pytest.mark.parametrize("transport", ["grpc", "json"])
def test_health_follows_loading_and_survives_load(transport, http_client):
    server = ServerProcess(transport, ("--models", "iris")).start()
    try:
        # The process binds before it imports TensorFlow and loads: several seconds here.
        assert not server.healthy()
        server.wait_ready()
        assert server.healthy()
        target = connect(server.transport, server.address)
        for _ in range(200):
            target.predict("iris", samples.iris_rows(4)[0])
        assert server.healthy()
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("transport", ["grpc", "json"])
def test_sigterm_finishes_in_flight_request(transport, http_client):
    # Every prediction sleeps 1.5 s, so the request is surely in flight at SIGTERM.
    server = ServerProcess(transport, ("--models", "iris", "--inject-delay-ms", "1500"))
    with server:
        target = connect(server.transport, server.address)
        result: dict[str, object] = {}

        def call() -> None:
            try:
                result["answer"] = target.predict("iris", samples.iris_rows(1)[0])
            except Exception as exc:  # the assertion below reports it
                result["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert server.stop() == 0
        thread.join(10)
        assert "error" not in result, result.get("error")
        assert list(result["answer"].prediction.class_ids) == [0]
        assert time.monotonic() - started >= 0.5  # it waited for the request


def test_metadata_reports_device_and_spec(servers, grpc_channel, http_client):
    body = http_client.get(f"http://{servers['json'].address}{metadata_path('mnist')}").json()
    own = body["metadata"]["wiremark"]  # beside TF Serving's signature_def
    assert own["device"] == "/CPU:0"
    assert own["family"] == "digits" and "28x28" in own["input"]
    assert own["versions"]["tensorflow"]
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["image"]["dtype"] == "DT_FLOAT"
    reply, _ = grpc_raw(
        grpc_channel, "GetModelMetadata", pb.MetadataRequest(model="face").SerializeToString()
    )
    meta = pb.ModelMetadata.FromString(reply)
    assert meta.device == "/CPU:0" and meta.kind == "detector" and meta.max_batch == 16


def test_openapi_documents_each_model(servers, http_client):
    spec = http_client.get(f"http://{servers['json'].address}/openapi.json").json()
    iris = spec["paths"]["/v1/models/iris:predict"]["post"]
    schema = iris["requestBody"]["content"]["application/json"]["schema"]
    assert {"instances", "inputs", "signature_name"} <= set(schema["properties"])
    assert "application/msgpack" in iris["requestBody"]["content"]
    assert {"200", "400", "404", "415", "429"} <= set(iris["responses"])
    assert "/v1/models/iris/versions/{version}:predict" in spec["paths"]
    assert "/v1/models/{model}/metadata" in spec["paths"]
    assert "/v1/models/face:predict" in spec["paths"]


@pytest.mark.parametrize("transport", ["grpc", "json"])
def test_workers_share_one_port(transport, http_client):
    server = ServerProcess(transport, ("--models", "iris", "--workers", "2"))
    with server:
        target = connect(server.transport, server.address)
        for _ in range(20):
            target.predict("iris", samples.iris_rows(2)[0])
        deadline = time.monotonic() + 60
        while sum("ready: iris" in line for line in server.log) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sum("ready: iris" in line for line in server.log) == 2, server.log_text()
        for _ in range(20):
            target.predict("iris", samples.iris_rows(2)[0])
        assert server.stop() == 0


def test_grpc_asyncio_mode_serves_checks_health_and_stops(http_client):
    server = ServerProcess(
        "grpc", ("--models", "iris", "--grpc-mode", "aio", "--inject-delay-ms", "800")
    )
    with server:
        assert any("grpc.aio server" in line for line in server.log)
        client = connect(server.transport, server.address)
        answer = client.predict("iris", samples.iris_rows(3)[0])
        assert list(answer.prediction.class_ids) == [0, 0, 0]
        result: dict[str, object] = {}
        thread = threading.Thread(
            target=lambda: result.update(a=client.predict("iris", samples.iris_rows(1)[0]))
        )
        thread.start()
        time.sleep(0.3)
        assert server.stop() == 0  # after the in-flight request finished
        thread.join(10)
        assert list(result["a"].prediction.class_ids) == [0]


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so-reuseport"])
@pytest.mark.parametrize("transport", ["grpc", "json"])
def test_a_port_someone_else_holds_is_refused_in_one_line(transport, reuse_port):
    """Another process listening on the port, even with SO_REUSEPORT, is not joined: the
    server says so in one line and exits 2."""
    with socket.socket() as holder:
        if reuse_port:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = wiremark(
            *("serve", "--transport", transport, "--models", "iris_rf", "--port", str(port)),
            timeout=60,
        )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("wiremark: error: ")
