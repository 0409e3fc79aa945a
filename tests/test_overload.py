"""Overload: four times a server's capacity, offered in open loop for 10 s. Every request is
answered, with a prediction or at once with 503 (Retry-After) / RESOURCE_EXHAUSTED; the
accepted ones are not queued without bound; no connection hangs.

The capacity is fixed by construction, not measured: `--max-in-flight 2` and an injected
100 ms wait (`--inject-delay-ms`, inside admission) allow at most 20 predictions a second,
whatever the machine's speed, so 80 requests a second is 4x capacity on any machine that
can send 80 requests a second. The bounds below are that construction's with a wide margin:
an accepted request waits for no other (admission refuses rather than queues), so it takes
about 100 ms; the test allows 50 times that.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest

from wiremark.harness.launch import ServerProcess
from wiremark.payloads import bodies, samples
from wiremark.payloads.contract import Family, grpc_path

IN_FLIGHT = 2
DELAY_MS = 100
CAPACITY = IN_FLIGHT * 1000 / DELAY_MS  # predictions per second
RATE = 4 * CAPACITY
SECONDS = 10
ACCEPTED_P99_BOUND_S = 50 * DELAY_MS / 1000
REQUEST_TIMEOUT_S = 30  # a request unanswered this long counts as a hang
ARGS = ("--models", "iris", "--max-in-flight", str(IN_FLIGHT), "--inject-delay-ms", str(DELAY_MS))


async def offer(send, rate: float, seconds: float) -> list[tuple[str, float]]:
    """Open loop: one request every 1/rate s from the intended start times, whatever the
    answers; (outcome, latency from the intended send time) for each."""
    start = time.perf_counter()
    tasks = []

    async def one(intended: float) -> tuple[str, float]:
        try:
            outcome = await asyncio.wait_for(send(), REQUEST_TIMEOUT_S)
        except TimeoutError:
            outcome = "hang"
        return outcome, time.perf_counter() - intended

    for i in range(int(rate * seconds)):
        intended = start + i / rate
        await asyncio.sleep(max(0.0, intended - time.perf_counter()))
        tasks.append(asyncio.ensure_future(one(intended)))
    return await asyncio.gather(*tasks)


def judge(outcomes: list[tuple[str, float]], ok: str, refused: str) -> None:
    kinds: dict[str, int] = {}
    for outcome, _ in outcomes:
        kinds[outcome] = kinds.get(outcome, 0) + 1
    offered = len(outcomes)
    print(f"\n{offered} offered at {RATE:g}/s (capacity {CAPACITY:g}/s): {kinds}")
    assert set(kinds) <= {ok, refused}, kinds  # every request answered, none hung or failed
    assert kinds.get(ok, 0) > 0 and kinds.get(refused, 0) > 0, kinds
    accepted = sorted(latency for outcome, latency in outcomes if outcome == ok)
    p99 = accepted[min(len(accepted) - 1, int(0.99 * len(accepted)))]
    print(f"accepted p99 {p99 * 1000:.0f} ms over {len(accepted)} replies")
    assert p99 < ACCEPTED_P99_BOUND_S, p99


def test_http_overload_is_answered_503_not_queued():
    body = bodies.encode("json", "iris", samples.iris_rows(1)[0], family=Family.TABULAR)

    async def run(address: str) -> list[tuple[str, float]]:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(
            base_url=f"http://{address}", limits=limits, timeout=REQUEST_TIMEOUT_S, trust_env=False
        ) as client:

            async def send() -> str:
                try:
                    reply = await client.post(
                        "/v1/models/iris:predict",
                        content=body,
                        headers={"content-type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    return f"error {type(exc).__name__}"
                if reply.status_code == 503:
                    assert reply.headers.get("retry-after") == "1"
                    assert "--max-in-flight 2" in reply.json()["error"]
                return str(reply.status_code)

            return await offer(send, RATE, SECONDS)

    with ServerProcess("json", ARGS) as server:
        judge(asyncio.run(run(server.address)), "200", "503")
        # and it serves on: a request once the load is gone is answered
        reply = httpx.post(
            f"http://{server.address}/v1/models/iris:predict",
            content=body,
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert reply.status_code == 200


@pytest.mark.parametrize("mode", ["threads", "aio"])
def test_grpc_overload_is_answered_resource_exhausted(mode):
    body = bodies.encode("grpc", "iris", samples.iris_rows(1)[0], family=Family.TABULAR)
    path = grpc_path("Classify")

    async def run(address: str) -> list[tuple[str, float]]:
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(path)

            async def send() -> str:
                try:
                    await call(body, timeout=REQUEST_TIMEOUT_S)
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name
                return "OK"

            return await offer(send, RATE, SECONDS)

    with ServerProcess("grpc", (*ARGS, "--grpc-mode", mode)) as server:
        judge(asyncio.run(run(server.address)), "OK", "RESOURCE_EXHAUSTED")
        with grpc.insecure_channel(server.address) as channel:
            assert channel.unary_unary(path)(body, timeout=10)
