"""The one request path every server kind runs: decode (+ injected CPU) -> (injected
delay) -> infer -> encode, each stage timed as a lap of one stopwatch (`payloads.timing.Laps`),
whose header travels back as `Server-Timing` (HTTP) or `server-timing` trailing metadata (gRPC).

A server builds one `Pipeline` per method or route (and per codec), with what every request
needs bound once; under load each look-up runs with cold caches. `run` is the thread-pool
path, `run_async` the event-loop path (slow models go to a worker thread there, so health
checks and fast models keep being answered). Errors propagate: the server kind maps them
to its wire's status at its own boundary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wiremark.payloads.contract import Batch, Prediction
from wiremark.payloads.timing import Laps

from .runner import Runner

# bytes (or a parsed message) in -> the runner to use, its decoded batch, and what the reply
# must follow (the codec's `form`: a REST request's format, TF Serving's model spec; None
# when nothing); raises the errors of `payloads.errors`, naming the field at fault
Decode = Callable[[Any], tuple[Runner, Batch, Any]]
Encode = Callable[[Prediction, Any], bytes]


@dataclass(frozen=True, slots=True)
class Slowdown:
    """A known regression every server kind injects the same way, to prove the gate catches
    one: `serve --inject-delay-ms` waits (adds latency, no CPU: at saturation it is not what
    a slower codec or model does) and `serve --inject-cpu-us` burns CPU on the request's
    thread inside the decode lap, as a slower decoder would."""

    delay_s: float = 0.0
    cpu_s: float = 0.0

    @classmethod
    def of(cls, delay_ms: float = 0.0, cpu_us: float = 0.0) -> Slowdown:
        return cls(delay_ms / 1000.0, cpu_us / 1e6)

    def __bool__(self) -> bool:
        return bool(self.delay_s or self.cpu_s)

    def burn(self) -> None:
        """Spin until this thread has used `cpu_s` more CPU time (not wall time: a thread
        that is preempted meanwhile still burns the full amount)."""
        if self.cpu_s:
            end = time.thread_time() + self.cpu_s
            while time.thread_time() < end:
                pass


NO_SLOWDOWN = Slowdown()


def infer(runner: Runner, batch: Batch, laps: Laps) -> Prediction:
    prediction = runner.predict(batch)
    laps.lap("infer")
    return prediction


@dataclass(frozen=True, slots=True)
class Pipeline:
    decode: Decode
    encode: Encode
    slowdown: Slowdown = NO_SLOWDOWN  # `--inject-cpu-us` in decode, the delay outside laps

    def run(self, data: Any) -> tuple[bytes, Laps]:
        """The request path on the calling thread."""
        laps = Laps()
        runner, batch, form = self.decode(data)
        self.slowdown.burn()
        laps.lap("decode")
        if self.slowdown.delay_s:
            time.sleep(self.slowdown.delay_s)
            laps.restart()
        out = self.encode(infer(runner, batch, laps), form)
        laps.lap("encode")
        return out, laps

    async def run_async(self, data: Any) -> tuple[bytes, Laps]:
        """The request path on an event loop; a runner marked `offload` infers on a thread."""
        laps = Laps()
        runner, batch, form = self.decode(data)
        self.slowdown.burn()
        laps.lap("decode")
        if self.slowdown.delay_s:
            await asyncio.sleep(self.slowdown.delay_s)
            laps.restart()
        if runner.offload:
            loop = asyncio.get_running_loop()
            prediction = await loop.run_in_executor(None, infer, runner, batch, laps)
        else:
            prediction = infer(runner, batch, laps)
        out = self.encode(prediction, form)
        laps.lap("encode")
        return out, laps
