"""The cell-process protocol, both ways: a request survives its own command line, and a
result its own output line. No server, no load: the parsing bench and calibrate rely on."""

from __future__ import annotations

import dataclasses

import pytest

from wiremark.harness.cell import build_parser
from wiremark.harness.protocol import MODULE, CellRequest, CellResult


def parsed(argv: list[str]) -> CellRequest:
    start = argv.index(MODULE) + 1
    return CellRequest.from_namespace(build_parser().parse_args(argv[start:]))


def test_a_request_survives_its_command_line(tmp_path):
    request = CellRequest(
        "msgpack",
        "127.0.0.1:9",
        model="mnist",
        users=3,
        duration=2.5,
        rate=40.0,
        arrival="poisson",
        encoding="list",
        server_pid=7,
        sample=4,
        wire_requests=5,
        raw=tmp_path / "lat0.npy",
    )
    argv = request.argv(cpus="1")
    assert argv[:3] == ["taskset", "-c", "1"]
    assert parsed(argv) == request
    plain = CellRequest("grpc", "127.0.0.1:9")
    assert parsed(plain.argv()) == plain and "--rate" not in plain.argv()


def test_a_request_field_the_cell_does_not_parse_is_caught():
    known = set(vars(build_parser().parse_args(["--transport", "grpc", "--address", "a:1"])))
    assert {f.name for f in dataclasses.fields(CellRequest)} <= known


def test_a_result_survives_its_output_line():
    result = CellResult(120, 2, 1.5, 80.0, 61.0, 0.4, 0.27, p50=1.1, p99=3.2, late=1)
    result.samples = [{"body": "AAE=", "server_timing": "decode;dur=0.010"}]
    assert CellResult.from_output("a log line\n" + result.to_json() + "\n") == result
    with pytest.raises(ValueError, match="no result"):
        CellResult.from_output("  \n")
