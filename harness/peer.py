"""`wiremark peer mlserver`: another project's model server on the same model, to measure
beside wiremark's own.

MLServer (Seldon; the Open Inference Protocol, KServe v2, over REST and gRPC) pins an older
FastAPI than wiremark, so it never enters wiremark's environment: on first use it gets a
virtualenv of its own, DIR/mlserver-<version> (DIR: --home, else $WIREMARK_HOME/peers, else
$XDG_CACHE_HOME/wiremark/peers, else ~/.cache/wiremark/peers), with scikit-learn and joblib
at wiremark's own versions, so the pickled forest loads as the one wiremark serves.

Each start writes a model repository (wiremark's iris_rf RandomForest as model.joblib, for
mlserver_sklearn) and a settings.json into a fresh run directory under the virtualenv,
starts `mlserver start` there, waits until every model says ready, and prints one
`target: TRANSPORT=HOST:PORT` line per wire, for `wiremark bench --target`. Ctrl-C (or
SIGTERM) stops MLServer and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from wiremark.usage import UsageError

from .signals import sigterm_unwinds

MLSERVER_VERSION = "1.7.1"
# MLServer 1.7.1's inference workers call asyncio.get_event_loop() before any loop runs;
# uvloop 0.22 made that an error, so every worker dies and no model ever loads.
UVLOOP = "uvloop==0.21.0"
MODELS = ("iris_rf",)
DEFAULT_WORKERS = 1  # MLServer's own default (Settings.parallel_workers)
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 15.0
PIP_TIMEOUT_S = 1800.0
MARKER = ".wiremark-installed"  # written last: its absence means an unfinished install
# The child's environment: no other virtualenv's paths, and no MLSERVER_* variables
# overriding the settings written here.
DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


class PeerError(RuntimeError):
    """A peer server could not be provided. The message is one line; `log` is the file
    with the whole story, when there is one."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log

    def tail(self, lines: int = 20) -> str:
        """The last `lines` lines of the log, or '' without one."""
        return log_tail(self.log, lines) if self.log else ""


class PeerUnavailable(PeerError):
    """The peer's virtualenv could not be created or its packages installed (no network,
    no such version on the index, a home that cannot be written)."""


class PeerStartError(PeerError):
    """The peer is installed but did not come up, or went away while serving."""


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def default_home() -> Path:
    """Where peers' virtualenvs live unless --home says otherwise."""
    if os.environ.get("WIREMARK_HOME"):
        return Path(os.environ["WIREMARK_HOME"]) / "peers"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "wiremark" / "peers"
    return Path.home() / ".cache" / "wiremark" / "peers"


def venv_dir(home: Path | None = None) -> Path:
    return (home or default_home()).expanduser().absolute() / f"mlserver-{MLSERVER_VERSION}"


def requirements() -> list[str]:
    """What pip installs: MLServer pinned, and the model's libraries at the versions in
    this process, so the forest pickled here unpickles there unchanged."""
    ours = importlib.metadata.version
    return [
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-sklearn=={MLSERVER_VERSION}",
        f"scikit-learn=={ours('scikit-learn')}",
        f"joblib=={ours('joblib')}",
        UVLOOP,
    ]


def child_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in DROPPED_ENV and not k.startswith("MLSERVER_")
    }


def _say(progress: TextIO | None, line: str) -> None:
    if progress is not None:
        print(line, file=progress, flush=True)


def ensure_venv(home: Path | None = None, progress: TextIO | None = sys.stderr) -> Path:
    """The MLServer virtualenv, created and installed on first use, reused after.

    The marker file, holding the requirement list, is written only once pip succeeded: an
    interrupted install, or one for other pins (wiremark's scikit-learn moved on), is
    redone from a clean virtualenv. Concurrent callers wait on a lock file. Raises
    PeerUnavailable, naming the log, when the virtualenv or its packages cannot be had."""
    venv = venv_dir(home)
    wanted = "\n".join(requirements()) + "\n"
    log = venv.with_name(venv.name + "-install.log")
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        with open(venv.with_name(venv.name + ".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say(progress, f"waiting for another wiremark installing {venv}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            if _installed(venv) == wanted and (venv / "bin" / "python").exists():
                return venv
            _install(venv, wanted, log, progress)
    except OSError as exc:
        raise PeerUnavailable(f"cannot set up MLServer's virtualenv in {venv}: {exc}") from exc
    return venv


def _installed(venv: Path) -> str | None:
    try:
        return (venv / MARKER).read_text()
    except OSError:
        return None


def _install(venv: Path, wanted: str, log: Path, progress: TextIO | None) -> None:
    if not venv.exists():
        why = "first use"
    elif _installed(venv) is None:
        why = "an earlier install did not finish"
    else:
        why = "its pinned packages changed"
    _say(progress, f"creating MLServer's virtualenv in {venv} ({why}, about a minute)")
    start = time.monotonic()
    python = str(venv / "bin" / "python")
    pip = (python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input")
    steps = [
        (
            "create the virtualenv",
            "python -m venv",
            [sys.executable, "-m", "venv", "--clear", str(venv)],
        ),
        (
            "install MLServer's packages",
            f"pip install {' '.join(wanted.split())}",
            [*pip, "--progress-bar", "off", *wanted.split()],
        ),
    ]
    with open(log, "w") as out:
        for what, shown, argv in steps:
            _say(progress, f"  {shown}")
            print(f"$ {' '.join(argv)}", file=out, flush=True)
            try:
                code: int | None = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=child_env(),
                    timeout=PIP_TIMEOUT_S,
                ).returncode
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                out.flush()
                ended = f"exit {code}" if code is not None else f"over {PIP_TIMEOUT_S:.0f} s"
                raise PeerUnavailable(
                    f"could not {what} ({ended}{_pip_error(log)}); log: {log}", log
                )
        freeze = subprocess.run(
            [python, "-m", "pip", "freeze", "--disable-pip-version-check"],
            capture_output=True,
            text=True,
            env=child_env(),
        )
        (venv / "freeze.txt").write_text(freeze.stdout)
    (venv / MARKER).write_text(wanted)
    _say(progress, f"  installed in {time.monotonic() - start:.0f} s")


def _pip_error(log: Path) -> str:
    """pip's last `ERROR:` line, as `: ...`, for the one-line message."""
    errors = [line for line in log_tail(log, 200).splitlines() if line.startswith("ERROR:")]
    return f": {errors[-1].removeprefix('ERROR:').strip()}" if errors else ""


def free_ports(host: str, *ports: int) -> list[int]:
    """`ports` with each 0 replaced by a port free on `host` now (all bound at once, so
    two zeros get two ports; MLServer binds them a moment later). A port given is tried
    the same way, as PeerStartError when taken: MLServer whose REST port is taken logs the
    error and keeps running without it."""
    from wiremark.servers.serve import bind_socket  # SO_REUSEADDR, as uvicorn binds

    with contextlib.ExitStack() as stack:
        chosen = []
        for port in ports:
            try:
                sock = stack.enter_context(bind_socket(host, port, reuse_port=False))
            except OSError as exc:
                raise PeerStartError(f"cannot bind {host}:{port}: {exc.strerror}") from None
            chosen.append(sock.getsockname()[1])
        return chosen


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host`."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def address(host: str, port: int) -> str:
    host = connect_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _write_iris_rf(folder: Path) -> None:
    import joblib

    from wiremark.servers.iris import IrisForest

    joblib.dump(IrisForest("cpu")._model, folder / "model.joblib")


MODEL_WRITERS = {"iris_rf": _write_iris_rf}


def settings(host: str, port_rest: int, port_grpc: int, workers: int) -> dict[str, object]:
    """MLServer's settings.json. Beyond the addresses, it turns off what wiremark's own
    servers do not do per request by default: access logs (debug), Prometheus metrics
    (their server on port 8082, the REST middleware and the gRPC interceptor) and reply
    compression (GZipMiddleware)."""
    return {
        "host": host,
        "http_port": port_rest,
        "grpc_port": port_grpc,
        "parallel_workers": workers,
        "debug": False,
        "metrics_endpoint": None,
        "gzip_enabled": False,
        "load_models_at_startup": True,
    }


def write_repository(
    workdir: Path, models: Sequence[str], host: str, port_rest: int, port_grpc: int, workers: int
) -> None:
    """settings.json and models/NAME/{model.joblib,model-settings.json} in `workdir`."""
    (workdir / "settings.json").write_text(
        json.dumps(settings(host, port_rest, port_grpc, workers), indent=2) + "\n"
    )
    for name in models:
        folder = workdir / "models" / name
        folder.mkdir(parents=True)
        MODEL_WRITERS[name](folder)
        model_settings = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "1"},
        }
        (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")


def check_models(models: Sequence[str]) -> tuple[str, ...]:
    unknown = [m for m in models if m not in MODEL_WRITERS]
    if unknown or not models:
        raise UsageError(
            f"the mlserver peer serves {', '.join(MODEL_WRITERS)} only, "
            f"not {', '.join(unknown) or '(no model)'}"
        )
    return tuple(models)


@dataclass
class MlserverPeer:
    """A running MLServer: its addresses, the version it reports, its process and log."""

    host: str
    port_rest: int
    port_grpc: int
    models: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    log: Path
    workdir: Path
    version: str = ""

    @property
    def rest(self) -> str:
        return address(self.host, self.port_rest)

    @property
    def grpc(self) -> str:
        return address(self.host, self.port_grpc)

    def targets(self) -> dict[str, str]:
        """Transport name to address, as `wiremark bench --target` takes them: the peer's
        own transports, so results and reports label its rows as MLServer's."""
        return {"mlserver-rest": self.rest, "mlserver-grpc": self.grpc}

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(connect_host(self.host), self.port_rest, timeout=timeout)
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def ready(self) -> bool:
        """Server and every model ready (the server alone says ready with no model loaded),
        and the gRPC port accepting connections."""
        try:
            paths = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in self.models)]
            if any(self.get(path)[0] != 200 for path in paths):
                return False
            with socket.create_connection((connect_host(self.host), self.port_grpc), 2.0):
                return True
        except OSError:
            return False

    def ended(self) -> str | None:
        """None while MLServer runs; else how it ended: `exit 1`, `killed by SIGKILL`."""
        code = self.proc.poll()
        if code is None:
            return None
        if code >= 0:
            return f"exit {code}"
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> MlserverPeer:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if (how := self.ended()) is not None:
                raise PeerStartError(
                    f"MLServer ended ({how}) before it was ready; log: {self.log}", self.log
                )
            if failed := self._bind_failure():
                raise PeerStartError(
                    f"MLServer could not bind: {failed}; log: {self.log}", self.log
                )
            if time.monotonic() > deadline:
                raise PeerStartError(
                    f"MLServer not ready after {timeout:.0f} s; log: {self.log}", self.log
                )
            time.sleep(0.2)
        status, body = self.get("/v2")
        self.version = json.loads(body).get("version", "?") if status == 200 else "?"
        return self

    def _bind_failure(self) -> str | None:
        """The log's line saying a port was taken (MLServer keeps running without it)."""
        for line in log_tail(self.log, 200).splitlines():
            if "address already in use" in line.lower():
                return line.removeprefix("ERROR:").strip()
        return None

    def stop(self, grace: float = STOP_GRACE_S) -> int:
        """SIGTERM (MLServer shuts its servers and worker pool down), SIGKILL to the whole
        process group if that takes longer than `grace` or a second interrupt comes; then
        whatever of the group is left (a stuck inference worker) goes too."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    self._kill_group()
        except KeyboardInterrupt:
            self._kill_group()
            raise
        finally:
            self._kill_group()
        return self.proc.wait()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def start_mlserver(
    home: Path | None = None,
    host: str = "127.0.0.1",
    port_rest: int = 0,
    port_grpc: int = 0,
    models: Sequence[str] = MODELS,
    workers: int = DEFAULT_WORKERS,
    ready_timeout: float = READY_TIMEOUT_S,
    progress: TextIO | None = sys.stderr,
) -> Iterator[MlserverPeer]:
    """MLServer serving `models`, ready, for the body of the `with`; stopped on the way
    out, errors and Ctrl-C included. Port 0 picks a free port. Raises PeerUnavailable when
    it cannot be installed, PeerStartError when it does not come up. The run directory
    (settings, model repository, MLServer's log) is removed once MLServer, having come up,
    stops cleanly; it is kept, for its log, when MLServer failed to start or did not exit 0."""
    models = check_models(models)
    venv = ensure_venv(home, progress)
    port_rest, port_grpc = free_ports(host, port_rest, port_grpc)
    runs = venv / "runs"
    runs.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=runs))
    write_repository(workdir, models, host, port_rest, port_grpc, workers)
    log = workdir / "mlserver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "mlserver"), "start", str(workdir)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,  # Ctrl-C reaches wiremark, which stops MLServer in order
        )
    peer = MlserverPeer(host, port_rest, port_grpc, models, proc, log, workdir)
    started = False
    try:
        peer.wait_ready(ready_timeout)
        started = True
        yield peer
    finally:
        code = peer.stop()
        if started and code == 0:
            shutil.rmtree(workdir, ignore_errors=True)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("peer", help="run another project's model server (MLServer) to bench")
    peers = p.add_subparsers(dest="peer", required=True, metavar="PEER")
    m = peers.add_parser(
        "mlserver",
        help="MLServer (Open Inference Protocol, REST and gRPC) in its own virtualenv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    m.add_argument(
        "--port-rest",
        type=int,
        default=0,
        metavar="P",
        help="REST port; 0 picks a free one (default: 0)",
    )
    m.add_argument(
        "--port-grpc",
        type=int,
        default=0,
        metavar="Q",
        help="gRPC port; 0 picks a free one (default: 0)",
    )
    m.add_argument(
        "--home",
        type=Path,
        default=None,
        metavar="DIR",
        help="where peers' virtualenvs live (default: $WIREMARK_HOME/peers, else "
        "$XDG_CACHE_HOME/wiremark/peers, else ~/.cache/wiremark/peers)",
    )
    m.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated, of {', '.join(MODEL_WRITERS)} (default: %(default)s)",
    )
    m.add_argument(
        "--workers",
        type=_workers,
        default=DEFAULT_WORKERS,
        metavar="N",
        help="MLServer's parallel_workers: inference worker processes behind the servers; "
        "0 runs inference in the server process itself (default: %(default)s, MLServer's)",
    )
    m.add_argument(
        "--ready-timeout",
        type=float,
        default=READY_TIMEOUT_S,
        metavar="S",
        help="seconds MLServer gets to load its models (default: %(default)s)",
    )
    m.set_defaults(run=run)


def _workers(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def run(args: argparse.Namespace) -> int:
    models = check_models([n.strip() for n in args.models.split(",") if n.strip()])
    serving = False
    try:
        with (
            sigterm_unwinds(),
            start_mlserver(
                args.home,
                args.host,
                args.port_rest,
                args.port_grpc,
                models,
                args.workers,
                args.ready_timeout,
            ) as peer,
        ):
            serving = True  # from here on, an interrupt is the way to stop
            for transport, where in peer.targets().items():
                print(f"target: {transport}={where}")
            print(
                f"ready: mlserver {peer.version} serving {','.join(models)} (stop with Ctrl-C)",
                flush=True,
            )
            print(f"mlserver log: {peer.log}", file=sys.stderr, flush=True)
            while (how := peer.ended()) is None:
                time.sleep(0.5)
            raise PeerStartError(f"MLServer ended ({how}) while serving; log: {peer.log}", peer.log)
    except KeyboardInterrupt:
        if serving:
            return 0
        raise
    except PeerError as exc:
        if isinstance(exc, PeerStartError) and (tail := exc.tail()):
            print(tail, file=sys.stderr)
        print(f"wiremark: error: {exc}", file=sys.stderr)
        return 2
