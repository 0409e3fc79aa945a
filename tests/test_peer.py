"""`wiremark peer mlserver`: the real MLServer, in its own virtualenv, started by the command
as a user starts it, answers on both wires what wiremark's iris_rf answers in-process, and
stops on Ctrl-C.

The virtualenv lives where the command puts it by default ($WIREMARK_HOME/peers, else
$XDG_CACHE_HOME/wiremark/peers, else ~/.cache/wiremark/peers), so it is installed once per
machine (about 90 s), not once per run. The test skips only when it cannot be installed."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from wiremark.harness import peer as peers

from .cli import wiremark

MODEL = "iris_rf"
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0


def iris_rows() -> np.ndarray:
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)[0].astype(np.float32)


@pytest.fixture(scope="module")
def reference():
    from wiremark.servers.iris import IrisForest

    return IrisForest("cpu").predict(iris_rows())


@pytest.fixture(scope="module")
def home() -> Path:
    """The shared virtualenv, installed here first so a machine that cannot install it
    skips, with pip's reason, instead of failing."""
    home = peers.default_home()
    try:
        peers.ensure_venv(home)
    except peers.PeerUnavailable as exc:
        pytest.skip(f"MLServer cannot be installed: {exc}\n{exc.tail()}")
    return home


@dataclass
class Running:
    proc: subprocess.Popen[str]
    targets: dict[str, str]
    ready: str
    stderr: Path

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace")


def _lines(stream, into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)


@pytest.fixture(scope="module")
def running(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    script = Path(sys.executable).with_name("wiremark")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "wiremark"]
    ports = ("--port-rest", "0", "--port-grpc", "0")
    stderr = tmp_path_factory.mktemp("peer") / "stderr.txt"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [*command, "peer", "mlserver", *ports, "--home", str(home)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    targets: dict[str, str] = {}
    ready = ""
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not ready:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no ready line in {START_TIMEOUT_S:.0f} s:\n{stderr.read_text()}")
            if line is None:
                pytest.fail(f"the command ended ({proc.wait()}) first:\n{stderr.read_text()}")
            if line.startswith("target: "):
                transport, _, where = line.removeprefix("target: ").partition("=")
                targets[transport] = where
            elif line.startswith("ready: "):
                ready = line
            else:
                pytest.fail(f"unexpected line on stdout: {line!r}")
        yield Running(proc, targets, ready, stderr)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _port_open(where: str) -> bool:
    host, _, port = where.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def test_unknown_model_is_a_usage_error_before_any_install(tmp_path):
    result = wiremark("peer", "mlserver", "--models", "mnist", "--home", tmp_path / "absent")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "wiremark: error: the mlserver peer serves iris_rf only, not mnist"
    ]
    assert result.stdout == "" and not (tmp_path / "absent").exists()


def test_prints_its_targets_and_version(running: Running):
    assert set(running.targets) == {"mlserver-rest", "mlserver-grpc"}
    assert all(w.startswith("127.0.0.1:") for w in running.targets.values())
    assert running.targets["mlserver-rest"] != running.targets["mlserver-grpc"]
    assert running.ready == (
        f"ready: mlserver {peers.MLSERVER_VERSION} serving {MODEL} (stop with Ctrl-C)"
    )


def test_rest_health_metadata_and_inference(running: Running, reference):
    rows = iris_rows()
    base = f"http://{running.targets['mlserver-rest']}"
    with httpx.Client(base_url=base, timeout=30, trust_env=False) as http:
        assert http.get("/v2/health/ready").status_code == 200
        metadata = http.get(f"/v2/models/{MODEL}")
        assert metadata.status_code == 200 and metadata.json()["name"] == MODEL
        request = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": rows.ravel().tolist(),
                }
            ],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        }
        reply = http.post(f"/v2/models/{MODEL}/infer", json=request)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["predict"]["shape"] == [150, 1]
    assert outputs["predict_proba"]["shape"] == [150, 3]
    class_ids = np.array(outputs["predict"]["data"])
    probabilities = np.array(outputs["predict_proba"]["data"]).reshape(150, 3)
    np.testing.assert_array_equal(class_ids, reference.class_ids)
    np.testing.assert_allclose(probabilities, reference.probabilities, rtol=0, atol=1e-6)


def test_grpc_inference(running: Running, reference):
    import tritonclient.grpc as triton

    rows = iris_rows()
    client = triton.InferenceServerClient(running.targets["mlserver-grpc"])
    try:
        assert client.is_server_ready() and client.is_model_ready(MODEL)
        tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        wanted = [triton.InferRequestedOutput(n) for n in ("predict", "predict_proba")]
        reply = client.infer(MODEL, [tensor], outputs=wanted)
    finally:
        client.close()
    class_ids, probabilities = reply.as_numpy("predict"), reply.as_numpy("predict_proba")
    assert class_ids.shape == (150, 1) and probabilities.shape == (150, 3)
    np.testing.assert_array_equal(class_ids.ravel(), reference.class_ids)
    np.testing.assert_allclose(probabilities, reference.probabilities, rtol=0, atol=1e-6)


def test_conform_passes_against_mlserver_over_both_oip_transports(running: Running):
    """`wiremark conform` against the peer the command started: MLServer's forest answers
    what wiremark's in-process iris_rf answers, over OIP REST (JSON tensors: MLServer has no
    binary tensor extension) and OIP gRPC (raw and typed contents)."""
    targets = [f"--target={t}={w}" for t, w in running.targets.items()]
    result = wiremark("conform", *targets, "--models", MODEL, "--json", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    cells = {c["transport"]: c for c in verdict["cells"]}
    assert set(cells) == {"mlserver-rest", "mlserver-grpc"} and verdict["passed"]
    assert cells["mlserver-rest"]["inputs"] == 150  # JSON tensors only
    assert cells["mlserver-grpc"]["inputs"] == 300  # raw and typed contents
    assert all(c["worst"] <= 1e-6 for c in cells.values())


def test_bench_runs_the_peer_beside_wiremarks_servers(home: Path, tmp_path):
    """One run, one model, one protocol, one load: bench starts MLServer (the `mlserver`
    server kind) beside wiremark's OIP gRPC server, measures both, charges MLServer's CPU
    to it (its inference runs in a child process) and labels its rows as the peer's."""
    scenario = tmp_path / "peer.toml"
    scenario.write_text(
        """[scenario]
name = "peer-test"
models = ["iris_rf"]
transports = ["oip-grpc", "mlserver-grpc"]
concurrency = [2]
duration_s = 1
max_duration_s = 4
warmup_s = 0.5
min_requests = 5
"""
    )
    out = tmp_path / "out"
    result = wiremark("bench", "--scenario", scenario, "--out", out, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "results.json").read_text())
    described = {t["name"]: t for t in run["transports"]}
    assert described["mlserver-grpc"]["peer"] == "MLServer"
    assert described["oip-grpc"]["peer"] == ""
    cells = {c["transport"]: c for c in run["cells"]}
    assert set(cells) == {"oip-grpc", "mlserver-grpc"}
    assert all(c["valid"] and c["requests"] >= 5 for c in cells.values())
    # the inference worker is a child of `mlserver start`, itself under `wiremark serve`
    assert cells["mlserver-grpc"]["server_cpu_ms"] > 1.0
    assert "MLServer OIP gRPC" in (out / "report.html").read_text()


def test_ctrl_c_stops_it_and_frees_its_ports(running: Running):
    running.proc.send_signal(signal.SIGINT)
    try:
        code = running.proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_TIMEOUT_S:.0f} s after SIGINT")
    assert code == 0, running.stderr_text()
    assert "Traceback" not in running.stderr_text()
    assert not any(_port_open(w) for w in running.targets.values())
    log = next(
        line.removeprefix("mlserver log: ")
        for line in running.stderr_text().splitlines()
        if line.startswith("mlserver log: ")
    )
    assert not Path(log).parent.exists(), "the run directory outlived a clean stop"


def test_sigterm_stops_it_too(home: Path):
    """SIGTERM, as a service manager or `kill` sends it, unwinds like Ctrl-C."""
    with subprocess.Popen(
        [sys.executable, "-m", "wiremark", "peer", "mlserver", "--home", str(home)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        assert proc.stdout is not None
        targets = []
        for line in proc.stdout:
            if line.startswith("target: "):
                targets.append(line.strip().partition("=")[2])
            if line.startswith("ready: "):
                break
        assert len(targets) == 2, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err}"
    assert not any(_port_open(w) for w in targets)


def test_an_install_that_cannot_be_had_is_one_line_naming_its_log(tmp_path, monkeypatch):
    """pip finding nothing (as offline, or where the pinned version is not on the index)
    ends in exit 2 and one error line naming the log; no marker, so the next run retries."""
    wheels = tmp_path / "no-wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    home = tmp_path / "home"
    result = wiremark("peer", "mlserver", "--home", home, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    log = home / f"mlserver-{peers.MLSERVER_VERSION}-install.log"
    assert last.startswith("wiremark: error: could not install MLServer's packages"), last
    assert last.endswith(f"log: {log}") and "mlserver==" in log.read_text()
    assert not (home / f"mlserver-{peers.MLSERVER_VERSION}" / peers.MARKER).exists()
    with pytest.raises(peers.PeerUnavailable) as raised:
        peers.ensure_venv(home, progress=None)
    assert raised.value.log == log and raised.value.tail()
