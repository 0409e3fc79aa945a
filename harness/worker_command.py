"""`wiremark worker --master HOST:PORT`: a load worker on this host for a bench run on
another (`bench --expect-workers N --master-bind HOST:PORT`). The worker itself is
`harness/worker.py`, imported only when the command runs: it imports Locust, which patches
the process for gevent, and the CLI builds every command's parser for `--help`.
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master", required=True, metavar="HOST:PORT", help="the bench host's --master-bind"
    )
    parser.add_argument("--once", action="store_true", help="one cell, then exit")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="a load worker on this host for a bench run elsewhere (bench --expect-workers)",
        description="Connect to a bench run's --master-bind and run its cells' load: every "
        "cell of the run, one after the other, until interrupted.",
    )
    add_arguments(p)
    p.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m wiremark.harness.worker` (bench's local workers)."""
    parser = argparse.ArgumentParser(
        prog="python -m wiremark.harness.worker", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from .protocol import parse_address
    from .worker import serve

    parse_address(args.master)  # a ValueError: one line from the CLI, before Locust loads
    logging.getLogger("locust").setLevel(logging.WARNING)  # a line per cell otherwise
    print(
        f"wiremark worker: working for the bench master at {args.master} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    return serve(args.master, args.once)
