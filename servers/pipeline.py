"""The one request path every server kind runs: decode -> (injected delay) -> infer ->
encode, each stage timed as a lap of one stopwatch (`payloads.timing.Laps`), whose header
travels back as `Server-Timing` (HTTP) or `server-timing` trailing metadata (gRPC).

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


def infer(runner: Runner, batch: Batch, laps: Laps) -> Prediction:
    prediction = runner.predict(batch)
    laps.lap("infer")
    return prediction


@dataclass(frozen=True, slots=True)
class Pipeline:
    decode: Decode
    encode: Encode
    delay_s: float = 0.0  # `--inject-delay-ms`: a known slowdown, outside every lap

    def run(self, data: Any) -> tuple[bytes, Laps]:
        """The request path on the calling thread."""
        laps = Laps()
        runner, batch, form = self.decode(data)
        laps.lap("decode")
        if self.delay_s:
            time.sleep(self.delay_s)
            laps.restart()
        out = self.encode(infer(runner, batch, laps), form)
        laps.lap("encode")
        return out, laps

    async def run_async(self, data: Any) -> tuple[bytes, Laps]:
        """The request path on an event loop; a runner marked `offload` infers on a thread."""
        laps = Laps()
        runner, batch, form = self.decode(data)
        laps.lap("decode")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
            laps.restart()
        if runner.offload:
            loop = asyncio.get_running_loop()
            prediction = await loop.run_in_executor(None, infer, runner, batch, laps)
        else:
            prediction = infer(runner, batch, laps)
        out = self.encode(prediction, form)
        laps.lap("encode")
        return out, laps
