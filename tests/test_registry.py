"""A transport is one registered unit: the shipped ones are complete, an incomplete one is
caught, and a transport plus a model registered from the test suite alone run through
`serve`, `conform` and a `bench` cell with no module of the package edited."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from wiremark.harness import transports as drivers
from wiremark.payloads import transport as registry
from wiremark.payloads.transport import WIRE_HTTP1, RestCodec, Transport
from wiremark.reports import records

from .cli import wiremark

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "tests.plugins.plugin_json"


@pytest.mark.parametrize("name", registry.names(peers=True))
def test_every_registered_transport_is_complete(name):
    assert drivers.incomplete(registry.get(name)) == []


@pytest.mark.parametrize(
    ("change", "lacks"),
    [
        ({"codec": object()}, "no body codec"),
        ({"server": "no-such-kind"}, "no server kind"),
        ({"label": ""}, "no label"),
    ],
)
def test_an_incomplete_transport_is_caught(change, lacks):
    broken = dataclasses.replace(registry.get("json"), name="broken", **change)
    problems = drivers.incomplete(broken)
    assert len(problems) == 1 and problems[0].startswith(lacks), problems


def test_a_wire_without_a_driver_is_refused_or_caught():
    with pytest.raises(ValueError, match="unknown wire"):
        registry.register(Transport("x", "X", "X", "carrier-pigeon", RestCodec(), "fastapi"))
    lone = Transport("x", "X", "X", WIRE_HTTP1, RestCodec(), "fastapi")
    saved = drivers.DRIVERS.pop(WIRE_HTTP1)
    try:
        assert drivers.incomplete(lone) == ["no load driver for the wire 'http1.1'"]
    finally:
        drivers.DRIVERS[WIRE_HTTP1] = saved


def iris_inputs(transport: str) -> int:
    """The rows conformance checks of a tabular model on `transport`."""
    known = registry.TRANSPORTS.get(transport)
    return 300 if known is not None and known.tensor_encodings else 150


def plugin_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    return {**os.environ, registry.PLUGINS_ENV: PLUGIN, "PYTHONPATH": path}


def test_a_plugin_transport_conforms_and_benches(tmp_path):
    env = plugin_env()
    done = wiremark("conform", "--json", "--models", "fake_iris", env=env, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    cells = json.loads(done.stdout)["cells"]
    # every registered transport, the plugin's among them, each serving the plugin's model
    assert {c["transport"] for c in cells} == {*registry.names(), "plugin-json"}
    assert "tfs-grpc" in registry.names()
    # iris's 150 rows, in both tensor encodings where a transport has them (OIP)
    assert all(c["passed"] and c["inputs"] == iris_inputs(c["transport"]) for c in cells), cells

    scenario = tmp_path / "plugin.toml"
    scenario.write_text(
        "[scenario]\n"
        'name = "plugin"\nmodels = ["fake_iris"]\ntransports = ["plugin-json"]\n'
        "concurrency = [2]\nrate = []\nduration_s = 1\nmax_duration_s = 5\nwarmup_s = 0.5\n"
        "min_requests = 20\nwire_requests = 5\nsample = 5\n"
    )
    out = tmp_path / "run"
    done = wiremark(
        "bench", "--scenario", scenario, "--out", out, "--no-report", env=env, cwd=ROOT, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = records.load(out)
    (cell,) = run.cells
    assert cell["transport"] == "plugin-json" and cell["model"] == "fake_iris"
    assert cell["valid"], cell["invalid_reasons"]
    assert cell["sampled"] == 5 and cell["sample_mismatches"] == 0
    assert cell["wire_up_bytes"] > cell["request_bytes"]  # headers and all
    (described,) = run.meta["transports"]
    assert described["label"] == "Plugin JSON" and described["wire"] == WIRE_HTTP1
    assert "FastAPI on uvicorn" in run.meta["settings"]["plugin-json"]


def test_the_wire_words_and_legacy_transports_agree_with_the_registry():
    """reports/ imports nothing from payloads/, so it keeps the result file's vocabulary
    itself: it must say what the registry says."""
    assert records.WIRES == registry.WIRES
    shipped = [registry.get(t["name"]).describe() for t in records.LEGACY_TRANSPORTS]
    assert list(records.LEGACY_TRANSPORTS) == shipped


def test_every_model_has_one_family_on_both_sides():
    """Clients look a model's family up in the wire contract, servers in its runner class:
    `servers.runner.register` writes both, and the shipped tables must agree."""
    from wiremark.payloads.contract import MODEL_FAMILIES
    from wiremark.servers import runner

    assert set(runner.models()) == set(MODEL_FAMILIES)
    for name in runner.models():
        assert runner.REGISTRY[name]().family is MODEL_FAMILIES[name], name
