"""TLS on every transport: servers started with a throwaway CA's certificate (trustme),
clients that verify it (conformance's clients, the lean HTTP/1.1 and HTTP/2 connections,
httpx and grpcio), clients that do not trust it refused, and `tls` as a bench dimension
whose cells record TLS's records in their wire bytes and whose report says what TLS
costs. Report figures are tested on synthetic cells, never on live timings."""

from __future__ import annotations

import copy
import functools
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from wiremark.harness import scenario as scenarios
from wiremark.harness.conformance import conform
from wiremark.harness.http1 import Connection as Http1
from wiremark.harness.http1 import prepare
from wiremark.harness.http2 import Connection as Http2
from wiremark.harness.launch import ServerProcess, running
from wiremark.harness.tls import Certificates, Trust
from wiremark.harness.transports import connect
from wiremark.payloads import grpc_codec, rest
from wiremark.payloads import transport as registry
from wiremark.payloads.contract import JSON, Family, grpc_path, predict_path
from wiremark.payloads.errors import WiremarkError
from wiremark.payloads.samples import iris_rows
from wiremark.reports import analysis as an
from wiremark.reports import records, report

from . import synthetic
from .cli import wiremark
from .test_registry import iris_inputs

ROWS = iris_rows(3)[0]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Trust:
    """A CA that signed none of the servers' certificates."""
    return Trust(Certificates.make(tmp_path_factory.mktemp("other")).ca)


@pytest.fixture(scope="module")
def tls_servers(certs: Certificates) -> Iterator[dict[str, ServerProcess]]:
    """Every registered transport but the peers, over TLS."""
    procs = {t: ServerProcess(t, ("--models", "iris"), tls=certs) for t in registry.names()}
    with running(procs.values()):
        yield procs


def test_every_transport_conforms_over_tls(tls_servers, certs):
    cells = conform({t: p.address for t, p in tls_servers.items()}, ["iris"], tls=Trust(certs.ca))
    assert {c.transport for c in cells} == set(registry.names())
    for cell in cells:
        assert cell.passed, cell.mismatches
        assert cell.inputs == iris_inputs(cell.transport)


def test_a_client_that_does_not_trust_the_server_is_refused(tls_servers, stranger):
    for transport, proc in tls_servers.items():
        with (
            pytest.raises(WiremarkError) as refused,
            connect(transport, proc.address, timeout=2, tls=stranger) as client,
        ):
            client.predict("iris", ROWS)
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value), transport  # it says why
        assert proc.healthy(), transport  # and the server serves on


def test_a_plaintext_client_gets_no_prediction_from_a_tls_server(tls_servers):
    for transport, proc in tls_servers.items():
        with pytest.raises(WiremarkError), connect(transport, proc.address, timeout=2) as client:
            client.predict("iris", ROWS)
        assert proc.healthy(), transport


def lean_http1(address: str, tls: ssl.SSLContext) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    body = rest.dump_json(rest.encode_request(Family.TABULAR, ROWS, binary=False))
    request = prepare("POST", host, int(port), predict_path("iris"), {"Content-Type": JSON}, body)
    conn = Http1(host, int(port), timeout=5, tls=tls)
    try:
        reply = conn.exchange(request)
        return reply.status, reply.body
    finally:
        conn.close()


def lean_http2(address: str, tls: ssl.SSLContext) -> int:
    host, port = address.rsplit(":", 1)
    conn = Http2(host, int(port), timeout=5, tls=tls)
    try:
        conn.connect()
        message = grpc_codec.encode_request(Family.TABULAR, "iris", ROWS).SerializeToString()
        reply = conn.exchange(conn.prepare(grpc_path("Classify"), message))
        assert reply.body, reply
        return reply.status
    finally:
        conn.close()


def test_the_lean_connections_verify_the_server(tls_servers, certs, stranger):
    json_address, grpc_address = tls_servers["json"].address, tls_servers["grpc"].address
    status, body = lean_http1(json_address, Trust(certs.ca).ssl_context())
    assert status == 200 and b"probabilities" in body
    assert lean_http2(grpc_address, Trust(certs.ca).ssl_context(alpn=("h2",))) == 0
    with pytest.raises(ssl.SSLCertVerificationError):
        lean_http1(json_address, stranger.ssl_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        lean_http2(grpc_address, stranger.ssl_context(alpn=("h2",)))


def test_a_certificate_for_another_name_is_refused(tmp_path):
    """The address is checked, not only the CA: a certificate naming another host fails."""
    elsewhere = Certificates.make(tmp_path, names=("example.test",))
    proc = ServerProcess("json", ("--models", "iris"), tls=elsewhere).start()  # bound
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match=r"IP address mismatch"):
            lean_http1(proc.address, Trust(elsewhere.ca).ssl_context())
        assert proc.healthy() is False  # its own health check verifies the name too
    finally:
        proc.stop()


# ---------------------------------------------------------------------------- bench

TLS_RUN = """
[scenario]
name = "tls"
models = ["iris"]
transports = ["grpc", "json"]
concurrency = [2]
tls = [false, true]
duration_s = 1
warmup_s = 0.5
min_requests = 50
wire_requests = 10
sample = 5
"""


@pytest.fixture(scope="module")
def tls_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[records.Run, Path, str]:
    tmp = tmp_path_factory.mktemp("bench-tls")
    (tmp / "s.toml").write_text(TLS_RUN)
    result = wiremark("bench", "--scenario", tmp / "s.toml", "--out", tmp / "out", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    return records.load(tmp / "out"), tmp / "out" / "report.html", result.stderr


def test_bench_measures_each_transport_plaintext_and_over_tls(tls_run):
    run, _, log = tls_run
    assert run.meta["schema_version"] == records.SCHEMA_VERSION
    by = {(c["transport"], c["tls"]): c for c in run.cells}
    assert set(by) == {(t, tls) for t in ("grpc", "json") for tls in (False, True)}
    for cell in run.cells:
        assert cell["valid"], cell["invalid_reasons"]
        assert cell["sampled"] > 0 and cell["sample_mismatches"] == 0
    for transport in ("grpc", "json"):
        plain, tls = by[(transport, False)], by[(transport, True)]
        # the same bodies; on the wire, TLS records (a header and a tag each) come on top
        assert tls["request_bytes"] == plain["request_bytes"]
        assert tls["wire_up_bytes"] > plain["wire_up_bytes"]
        assert tls["wire_down_bytes"] > plain["wire_down_bytes"]
    assert "iris grpc closed c=2 (TLS)" in log


def test_the_report_says_what_tls_costs(tls_run):
    _, html_path, _ = tls_run
    html = html_path.read_text()
    section = html[html.index('id="tls"') : html.index('id="plots"')]
    assert "What TLS costs" in section and "Over TLS against plaintext" in section
    assert section.count("<tr><td>") == 2  # one row per transport (one client, one load)
    assert 'href="#tls"' in html


# ---------------------------------------------------------------------------- the parts


def test_the_tls_dimension_in_scenarios():
    base = {"models": ["iris_rf"], "transports": ["grpc", "mlserver-grpc"]}
    s = scenarios.parse({"scenario": {**base, "tls": [False, True]}})
    cells = list(s.cells())
    # the peer runs without TLS: its plaintext cell only
    assert [(c.transport, c.tls) for c in cells] == [
        ("grpc", False),
        ("mlserver-grpc", False),
        ("grpc", True),
    ]
    assert cells[-1].label().endswith("(TLS)")
    assert cells[0].workload != cells[-1].workload  # wire bytes and rates apart
    assert scenarios.parse({"scenario": {**base, "tls": True}}).tls == [True]
    for bad in (["yes"], [], [True, True], [1]):
        with pytest.raises(scenarios.ScenarioError, match="tls must be"):
            scenarios.parse({"scenario": {**base, "tls": bad}})


def test_older_result_files_read_as_plaintext(tmp_path):
    doc = synthetic.run_doc(run_id="old", trials=1)
    doc["schema_version"] = 4
    for cell in doc["cells"]:
        cell.pop("tls", None)
    run = records.load(synthetic.write_doc(tmp_path, doc))
    assert run.cells and all(c["tls"] is False for c in run.cells)


def with_tls_twins(doc: dict, p50_factor: float, cpu_added: float) -> dict:
    """Every cell of `doc` once more over TLS: p50 times `p50_factor`, server CPU plus
    `cpu_added` ms, 22 bytes more each way."""
    twins = []
    for cell in doc["cells"]:
        twin = copy.deepcopy(cell)
        twin["tls"] = True
        twin["p50_ms"] = cell["p50_ms"] * p50_factor
        twin["server_cpu_ms"] = cell["server_cpu_ms"] + cpu_added
        twin["wire_up_bytes"] += 22
        twin["wire_down_bytes"] += 22
        twins.append(twin)
    return doc | {"cells": doc["cells"] + twins}


def test_tls_costs_on_synthetic_cells(tmp_path):
    doc = with_tls_twins(synthetic.run_doc(run_id="tls", trials=2), 1.25, 0.05)
    run = records.load(synthetic.write_doc(tmp_path, doc))
    med = an.medians(an.cells_frame([run]), valid_only=True)
    costs = an.tls_costs(med, 0, "tls")
    assert costs.measured
    keys = ("model", "batch", "encoding", "compression", "concurrency", "transport", "client")
    closed = {tuple(c[k] for k in keys) for c in doc["cells"] if c["mode"] == "closed"}
    assert len(costs.rows) == len(closed) > 0
    for row in costs.rows:
        assert row.p50_ratio == pytest.approx(1.25)
        assert row.server_cpu_added_ms == pytest.approx(0.05)
        assert row.wire_bytes[1] - row.wire_bytes[0] == pytest.approx(44)
        assert "TLS" not in row.variant and an.TLS not in row.variant
    assert costs.p50_ratio == pytest.approx(dict.fromkeys(("grpc", "json", "msgpack"), 1.25))
    html = report.render([run], tmp_path / "r.html").read_text()
    section = html[html.index('id="tls"') : html.index('id="plots"')]
    assert "gRPC p50 1.25×, server CPU +0.050 ms/req" in section
    plain = synthetic.run_doc(run_id="plain", trials=1)
    html = report.render(
        [records.load(synthetic.write_doc(tmp_path / "p", plain))], tmp_path / "p.html"
    ).read_text()
    assert 'id="tls"' not in html  # no TLS cells, no section


# ---------------------------------------------------------------------------- the CLI

serve = functools.partial(wiremark, "serve", "--transport", "json", "--models", "iris")


def test_serve_needs_both_tls_files_and_names_one_that_will_not_load(tmp_path, certs):
    result = serve("--tls-cert", certs.cert)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "wiremark: error: --tls-cert and --tls-key go together: give both, or neither"
    )
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    for transport in ("json", "grpc"):
        result = wiremark(
            "serve", "--transport", transport, "--models", "iris",
            "--tls-cert", broken, "--tls-key", certs.key,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "will not load" in lines[0] and str(broken) in lines[0]


def test_bench_refuses_both_tls_settings_on_a_target(tmp_path):
    (tmp_path / "s.toml").write_text(TLS_RUN)
    result = wiremark("bench", "--scenario", tmp_path / "s.toml", "--target", "json=127.0.0.1:9")
    assert result.returncode == 2
    assert "a --target serves TLS or does not" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_gate_names_tls_cells():
    from wiremark.reports import gate

    key = dict.fromkeys(records.CELL_KEY) | {"model": "iris", "transport": "grpc"}
    key |= {"mode": "closed", "concurrency": 8, "batch": 1, "compression": "none"}
    assert gate.cell_label(key | {"tls": True}).endswith("TLS")
    assert "TLS" not in gate.cell_label(key | {"tls": False})


def test_bench_measures_a_tls_target_verified_against_the_given_ca(tmp_path, certs):
    text = TLS_RUN.replace("tls = [false, true]", "tls = [true]").replace(
        'transports = ["grpc", "json"]', 'transports = ["json"]'
    )
    (tmp_path / "s.toml").write_text(text)
    with ServerProcess("json", ("--models", "iris"), tls=certs) as server:
        target = ("--target", f"json={server.address}")
        plain = wiremark("bench", "--scenario", tmp_path / "s.toml", *target)
        assert plain.returncode == 2  # the machine's CA store does not know the test CA
        assert "certificate" in plain.stderr.lower() and "Traceback" not in plain.stderr
        result = wiremark(
            "bench", "--scenario", tmp_path / "s.toml", *target,
            "--tls-ca", certs.ca, "--out", tmp_path / "out", "--no-report",
            timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (cell,) = records.load(tmp_path / "out").cells
    assert cell["tls"] is True and cell["valid"], cell["invalid_reasons"]
    assert cell["server_cpu_ms"] is None  # a server bench did not start
