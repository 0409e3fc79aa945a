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
        load_processes=2,
        expect_workers=1,
        master_bind="0.0.0.0:5557",
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


def test_an_open_loop_cell_gets_the_time_its_minimum_takes_at_its_rate():
    """A slow model's open loop at 3/s cannot reach 40 replies in 12 s: it is given 16.7 s
    (1.25 x 40 / 3), whatever its workers; closed loop and fast rates keep max_duration_s."""
    from wiremark.harness.execution import Target, Workers, request
    from wiremark.harness.scenario import CellSpec, Scenario

    scenario = Scenario(duration_s=4, max_duration_s=12, min_requests=40)
    target = Target("json", "127.0.0.1:9", None)
    spec = CellSpec("face", "json", "open", 32, "50%", "constant", 1, "raw", "none")
    slow = request(spec, target, 3.0, 1, scenario, False)
    assert slow.max_duration == pytest.approx(16.667) and slow.min_requests == 40
    two = request(spec, target, 3.0, 2, scenario, False, Workers(remote=1, master_bind="h:1"))
    assert two.max_duration == slow.max_duration and two.rate == 3.0
    assert (two.load_processes, two.expect_workers, two.master_bind) == (2, 1, "h:1")
    fast = request(spec, target, 500.0, 1, scenario, False)
    closed = CellSpec("face", "json", "closed", 8, None, None, 1, "raw", "none")
    shut = request(closed, target, None, 1, scenario, False)
    assert fast.max_duration == shut.max_duration == 12


def test_a_cell_s_load_is_shared_out_over_its_workers():
    """The rate split evenly, each worker's schedule offset by 1/rate from the one before
    (so their sends interleave), sampling and wire bytes on the first worker only."""
    from wiremark.harness.protocol import shares

    three = shares(3, users=8, rate=600.0, sample=5, wire_requests=20)
    assert [s.rate for s in three] == [200.0] * 3
    assert [s.phase for s in three] == pytest.approx([0.0, 1 / 600, 2 / 600])
    assert [s.sample for s in three] == [5, 0, 0] and [s.wire_requests for s in three] == [20, 0, 0]
    assert len({s.seed for s in three}) == 3 and all(s.users == 8 for s in three)
    closed = shares(2, users=4, rate=0.0, sample=0, wire_requests=0)
    assert [(s.rate, s.phase) for s in closed] == [(0.0, 0.0)] * 2
