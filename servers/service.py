"""What every transport serves, written once: the loaded runners, readiness, and the
decode -> infer -> encode pipeline with its stage timings. The gRPC and HTTP servers are
thin adapters over `ModelService`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wiremark.payloads.contract import (
    DEFAULT_BODY_IDLE_S,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_IN_FLIGHT,
    Limits,
)
from wiremark.payloads.errors import NotReady, UnknownModel

from .pipeline import Slowdown
from .runner import Runner, build_all, models

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceConfig:
    models: tuple[str, ...] = field(default_factory=models)
    device: str = "cpu"
    max_batch: int = DEFAULT_MAX_BATCH
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_idle_s: float = DEFAULT_BODY_IDLE_S  # HTTP: seconds without body bytes -> 408
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT  # predictions at once; more are refused
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # checked from the header, before decoding
    # an artificial, documented slowdown for proving the gate (`pipeline.Slowdown`): a wait
    # per request, and CPU burnt per request
    inject_delay_ms: float = 0.0
    inject_cpu_us: float = 0.0
    # NAME -> MODEL: serve MODEL's runner under NAME, a deliberately wrong model for testing
    # that conformance checks catch one
    serve_as: tuple[tuple[str, str], ...] = ()
    # "gzip": compress every reply (gRPC message compression; HTTP Content-Encoding for
    # clients that send Accept-Encoding: gzip). Compressed requests are always accepted.
    compression: str = "none"

    @property
    def slowdown(self) -> Slowdown:
        return Slowdown.of(self.inject_delay_ms, self.inject_cpu_us)


@dataclass
class ModelService:
    config: ServiceConfig
    runners: dict[str, Runner] = field(default_factory=dict)
    device: str = "unloaded"
    error: BaseException | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _limits: dict[str, Limits] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Build and warm every runner; health turns SERVING when it returns. Idempotent."""
        if self.ready:
            return
        start = time.perf_counter()
        swapped = dict(self.config.serve_as)
        built, self.device = build_all(
            dict.fromkeys(swapped.get(n, n) for n in self.config.models), self.config.device
        )
        for name in self.config.models:
            self.runners[name] = built[swapped.get(name, name)]
            if name in swapped:
                log.warning("serving %s under the name %s (--serve-as)", swapped[name], name)
        self._ready.set()
        log.info(
            "ready: %s on %s in %.1f s",
            ", ".join(self.runners),
            self.device,
            time.perf_counter() - start,
        )

    def load_in_background(self, on_ready: Callable[[], None] | None = None) -> threading.Thread:
        """Load on a thread, then call `on_ready()`. A failure is logged and kept in .error."""

        def target() -> None:
            try:
                self.load()
            except BaseException as exc:
                self.error = exc
                log.error("loading models failed: %s", exc)
                return
            if on_ready is not None:
                on_ready()

        thread = threading.Thread(target=target, name="wiremark-load", daemon=True)
        thread.start()
        return thread

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def runner(self, model: str) -> Runner:
        found = self.runners.get(model)
        if found is not None:
            return found
        if not self.ready:
            raise NotReady("models are still loading; retry when /healthz says SERVING")
        loaded = ", ".join(self.runners) or "none"
        raise UnknownModel(f"no model named {model[:64]!r} is loaded (loaded: {loaded})", "model")

    def limits(self, runner: Runner) -> Limits:
        """What one request to `runner` may hold (made once per model, not per request)."""
        found = self._limits.get(runner.name)
        if found is None:
            max_batch = min(self.config.max_batch, runner.max_batch)
            found = self._limits[runner.name] = Limits(max_batch, self.config.max_image_pixels)
        return found
