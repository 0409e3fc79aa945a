"""`wiremark conform` passes on honest servers and fails on a server with the wrong model or
on no server at all."""

from __future__ import annotations

import functools
import json

import pytest

from wiremark.harness.launch import ServerProcess

from .cli import wiremark
from .conftest import TRANSPORTS, refused_address

conform = functools.partial(wiremark, "conform", "--json", timeout=600)


def test_every_model_and_transport_conforms(servers):
    targets = [f"--target={t}={servers[t].address}" for t in TRANSPORTS]
    result = conform(*targets)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    verdict = json.loads(result.stdout)
    assert verdict["passed"] is True
    cells = {(c["model"], c["transport"]): c for c in verdict["cells"]}
    assert set(cells) == {(m, t) for m in ("iris", "iris_rf", "mnist", "face") for t in TRANSPORTS}
    assert cells["iris", "grpc"]["inputs"] == 150
    assert cells["mnist", "msgpack"]["inputs"] == 1000  # 500 digits x 2 pixel encodings
    assert cells["face", "json"]["inputs"] == 9
    assert all(c["mismatches"] == 0 and c["worst"] <= 1e-6 for c in cells.values())


def test_a_wrong_model_fails_conformance():
    with ServerProcess("json", ("--models", "iris", "--serve-as", "iris=iris_rf")) as server:
        result = conform(f"--target=json={server.address}", "--models", "iris")
    assert result.returncode == 1
    verdict = json.loads(result.stdout)
    assert verdict["passed"] is False
    (cell,) = verdict["cells"]
    assert cell["mismatches"] > 0 and "probabilities differ" in " ".join(cell["details"])


def test_bad_target_is_a_usage_error():
    result = conform("--target", "soap=localhost:1")
    assert result.returncode == 2 and "TRANSPORT=HOST:PORT" in result.stderr


@pytest.mark.parametrize("transport", ["grpc", "json"])
def test_an_unreachable_target_fails_every_model(transport):
    result = conform(f"--target={transport}={refused_address()}", "--models", "iris,mnist")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["passed"] is False
    assert [c["model"] for c in verdict["cells"]] == ["iris", "mnist"]
    for cell in verdict["cells"]:
        assert cell["inputs"] == 0 and "Unreachable" in " ".join(cell["details"])
