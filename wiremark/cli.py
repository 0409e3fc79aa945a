"""The `wiremark` command: serve, bench, conform, report, gate, calibrate, overhead, peer.

Errors a user can act on print one line, `wiremark: error: ...`, and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from wiremark import __version__, usage
from wiremark.usage import UsageError

log = logging.getLogger("wiremark")


class _KeepOut:
    """An import hook under which the named top-level packages are not installed, as far as
    this process can tell: their import raises ImportError, and they never enter
    sys.modules (scikit-learn takes a package in sys.modules, even None, as imported)."""

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in self.names:
            raise ImportError(f"{name} is kept out of this process")
        return None


def add_serve(sub: argparse._SubParsersAction) -> None:
    from wiremark.payloads import transport as transports
    from wiremark.payloads.contract import (
        DEFAULT_BODY_IDLE_S,
        DEFAULT_MAX_BATCH,
        DEFAULT_MAX_BODY_BYTES,
        DEFAULT_MAX_IMAGE_PIXELS,
        DEFAULT_MAX_IN_FLIGHT,
    )
    from wiremark.servers.runner import models

    shipped = models()

    p = sub.add_parser("serve", help="run one model server (gRPC, JSON or MessagePack)")
    p.add_argument("--transport", choices=transports.names(peers=True), required=True)
    p.add_argument(
        "--models",
        type=usage.models,
        default=shipped,
        help=f"comma-separated (default: {','.join(shipped)})",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=0, help="port to bind; 0 picks a free one (default: 0)"
    )
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu")
    p.add_argument(
        "--workers", type=usage.positive, default=1, help="server processes sharing the port"
    )
    p.add_argument(
        "--grpc-mode",
        choices=("threads", "aio"),
        default="threads",
        help="grpcio server flavour: thread pool (default, faster here) or asyncio",
    )
    p.add_argument(
        "--max-batch", type=usage.positive, default=DEFAULT_MAX_BATCH, help="instances per request"
    )
    p.add_argument("--max-body-bytes", type=usage.positive, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument(
        "--body-idle-timeout",
        type=usage.non_negative,
        default=DEFAULT_BODY_IDLE_S,
        metavar="S",
        help="HTTP: answer 408 when a request's headers or body stop arriving for S seconds "
        "(an idle limit: a slow, steady client is never cut off; 0: wait for ever; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--max-in-flight",
        type=usage.positive,
        default=DEFAULT_MAX_IN_FLIGHT,
        metavar="N",
        help="predictions in progress at once per process; more are refused at once "
        "(HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED), not queued (default: %(default)s)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=usage.positive,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="refuse images whose header declares more pixels (default: %(default)s)",
    )
    p.add_argument(
        "--access-log", action="store_true", help="log every request (costs 13-17%% here)"
    )
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight requests get on shutdown"
    )
    p.add_argument(
        "--inject-delay-ms",
        type=usage.non_negative,
        default=0.0,
        help="add this delay to every prediction (for testing gates)",
    )
    p.add_argument(
        "--inject-cpu-us",
        type=usage.non_negative,
        default=0.0,
        help="burn this much CPU (microseconds) on every prediction, as a slower codec would "
        "(for testing gates)",
    )
    p.add_argument(
        "--compression",
        choices=("none", "gzip"),
        default="none",
        help="gzip every reply (compressed requests are always accepted)",
    )
    p.add_argument(
        "--serve-as",
        type=usage.swap,
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="serve MODEL under NAME: a deliberately wrong model, to test conformance checks",
    )
    p.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve TLS with this certificate chain (leaf first); needs --tls-key",
    )
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    # Keras imports pandas whenever it can (for DataFrame inputs, which never reach a model
    # server); the process being measured does without it.
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _KeepOut("pandas"))
    from wiremark.servers.serve import ServeOptions, TlsFiles, serve
    from wiremark.servers.service import ServiceConfig

    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together: give both, or neither")
    options = ServeOptions(
        transport=args.transport,
        host=args.host,
        port=args.port,
        workers=args.workers,
        grpc_mode=args.grpc_mode,
        access_log=args.access_log,
        grace_s=args.grace,
        reuse_port=args.reuse_port,
        tls=TlsFiles(args.tls_cert, args.tls_key) if args.tls_cert else None,
        service=ServiceConfig(
            models=args.models,
            device=args.device,
            max_batch=args.max_batch,
            max_body_bytes=args.max_body_bytes,
            body_idle_s=args.body_idle_timeout,
            max_in_flight=args.max_in_flight,
            max_image_pixels=args.max_image_pixels,
            inject_delay_ms=args.inject_delay_ms,
            inject_cpu_us=args.inject_cpu_us,
            compression=args.compression,
            serve_as=tuple(args.serve_as),
        ),
    )
    return serve(options)


# Each command's module adds its own parser. Only the chosen command's module is imported,
# so `wiremark serve` (the process being measured) loads nothing of the harness or reports.
COMMANDS = {
    "serve": "wiremark.cli",
    "bench": "wiremark.harness.bench",
    "conform": "wiremark.harness.conformance",
    "report": "wiremark.reports.report",
    "gate": "wiremark.reports.gate",
    "calibrate": "wiremark.harness.calibrate",
    "overhead": "wiremark.harness.overhead",
    "peer": "wiremark.harness.peer",
    "worker": "wiremark.harness.worker_command",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_serve(sub)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for `argv`: every command's full parser for help or a mistyped command,
    else the chosen one's, with the others named only."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="wiremark", description="What does the transport cost when you serve a model?"
    )
    parser.add_argument("--version", action="version", version=f"wiremark {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, module in COMMANDS.items():
        if chosen in COMMANDS and name != chosen:
            sub.add_parser(name)  # named, so argparse lists it; never parsed here
        else:
            importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    # wiremark never uses gRPC in a forked child that does not exec, and grpcio's fork
    # handlers can abort such a child before its exec (grpc/grpc#43055); before grpc loads
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpc core's INFO lines are noise here
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("absl", "tensorflow", "h5py", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from wiremark.servers.device import DeviceError

    try:
        return int(args.run(args) or 0)
    except (UsageError, DeviceError, OSError, ValueError) as exc:
        print(f"wiremark: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
