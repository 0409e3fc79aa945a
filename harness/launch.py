"""Start `wiremark serve` as a child process, learn its port, wait for health, stop it.

The server logs `listening on HOST:PORT` as soon as it has bound (port 0 resolves there),
then loads its models; `wait_ready()` polls the transport's own health check (GET /healthz,
or grpc.health.v1 Check) until it says SERVING.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from .tls import Certificates, Trust

LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServerStartError(RuntimeError):
    pass


@dataclass
class ServerProcess:
    transport: str
    args: Sequence[str] = ()
    cpus: str | None = None  # e.g. "0": pinned with taskset
    host: str = "127.0.0.1"
    port: int = 0
    tls: Certificates | None = None  # serve TLS with this certificate
    proc: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)
    _bound: threading.Event = field(default_factory=threading.Event)

    def entry(self) -> list[str]:
        """The program and subcommand; another server kind (the echo) overrides this."""
        return [sys.executable, "-m", "wiremark", "serve"]

    def command(self) -> list[str]:
        argv = [*self.entry(), "--transport", self.transport]
        argv += ["--host", self.host, "--port", str(self.port), *self.args]
        if self.tls is not None:
            argv += self.tls.serve_args()
        return ["taskset", "-c", self.cpus, *argv] if self.cpus else argv

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            self.command(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._bound.wait(timeout) or self.port == 0:
            self.stop()
            raise ServerStartError(f"{self.transport} server did not bind:\n{self.log_text()}")
        return self

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            match = LISTENING.search(line)
            if match and not self._bound.is_set():
                self.port = int(match.group(2))
                self._bound.set()
        self._bound.set()  # the process ended

    def log_text(self, lines: int = 40) -> str:
        return "\n".join(self.log[-lines:])

    def ended(self) -> str | None:
        """None while the process runs (or never started); else how it ended, in words:
        `exit 1`, `killed by SIGKILL`."""
        if self.proc is None or self.proc.poll() is None:
            return None
        code = self.proc.returncode
        if code >= 0:
            return f"exit {code}"
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"

    def fresh(self) -> ServerProcess:
        """A new, unstarted process of the same server (a free port: the old one may still
        be held)."""
        return dataclasses.replace(self, port=0, proc=None, log=[], _bound=threading.Event())

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def trust(self) -> Trust | None:
        """What its clients verify it against (None: it serves plaintext)."""
        return Trust(self.tls.ca) if self.tls is not None else None

    def healthy(self) -> bool:
        """True when the server says SERVING; False while it loads (its wire's check)."""
        from wiremark.payloads import transport as registry

        from .transports import driver

        codec = registry.get(self.transport).codec
        return driver(self.transport).healthy(self.address, codec, self.trust)

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(f"{self.transport} server exited:\n{self.log_text()}")
            if self.healthy():
                return self
            time.sleep(0.2)
        raise ServerStartError(
            f"{self.transport} server not SERVING after {timeout:.0f} s:\n{self.log_text()}"
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait for a graceful exit, SIGKILL if it does not come."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:  # never left running when it does not come up
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def prepare(procs: Iterable[ServerProcess]) -> None:
    """Each server kind's one-off preparation (a peer's virtualenv), before any starts."""
    from wiremark.payloads import transport as registry
    from wiremark.servers.serve import SERVER_KINDS

    known = (registry.TRANSPORTS.get(p.transport) for p in procs)  # an echo names a wire
    for kind in dict.fromkeys(t.server for t in known if t is not None):
        if kind in SERVER_KINDS:
            try:
                SERVER_KINDS[kind].prepare()
            except RuntimeError as exc:
                raise ServerStartError(f"the {kind} server cannot start: {exc}") from None


@contextmanager
def running(
    procs: Iterable[ServerProcess],
    ready_timeout: float = 120.0,
    before_ready: Callable[[], None] | None = None,
) -> Iterator[list[ServerProcess]]:
    """The one way servers start here (bench, conform, calibrate, overhead): all at once,
    so they load in parallel; `before_ready()` runs meanwhile; then each must say SERVING.
    Every server started is stopped on the way out, Ctrl-C and errors included."""
    procs = list(procs)
    prepare(procs)
    with ExitStack() as stack:
        for proc in procs:
            stack.callback(proc.stop)
            proc.start()
        if before_ready is not None:
            before_ready()
        for proc in procs:
            proc.wait_ready(ready_timeout)
        yield procs
