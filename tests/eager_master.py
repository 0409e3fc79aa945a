"""A cell master at its most eager, for `tests/test_workers.py`: it sends a local worker its
plan in the same breath as Locust's ack, with the worker stopped (SIGSTOP) meanwhile, so
the worker reads both in one go, as a worker on a busy machine does when it is not
scheduled between them. Prints one JSON line: whether the worker answered READY, and
what it wrote to stderr.

    python tests/eager_master.py

Run as a process of its own: importing Locust patches a process for gevent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import MasterRunner

from wiremark.harness.cell import WORKER_MODULE
from wiremark.harness.protocol import MSG_PLAN, MSG_READY, Share
from wiremark.harness.worker import CellUser

# a plan the worker can build without reaching the server (no wire pass)
CELL = {
    "transport": "json",
    "addresses": ["127.0.0.1:9"],
    "model": "iris",
    "batch": 1,
    "encoding": "raw",
    "compression": "none",
    "client": "lean",
    "tls": False,
    "arrival": "constant",
    "max_wait": 1.0,
}
SHARE = Share(index=0, workers=1, users=1, rate=0.0, phase=0.0, sample=0, wire_requests=0, seed=0)


def main() -> int:
    worker: subprocess.Popen[str] | None = None

    class Eager(MasterRunner):
        def handle_message(self, client_id: str, msg: Any) -> None:
            hello = msg.type == "client_ready"
            if hello:
                assert worker is not None
                os.kill(worker.pid, signal.SIGSTOP)
            super().handle_message(client_id, msg)  # the ack
            if hello:
                plan = {"cell": CELL, "share": dataclasses.asdict(SHARE), "ca_pem": None}
                self.send_message(MSG_PLAN, plan, client_id=msg.node_id)
                gevent.sleep(0.2)  # both are queued for the worker when it runs again
                os.kill(worker.pid, signal.SIGCONT)

    env = Environment(user_classes=[CellUser])
    master = env.runner = Eager(env, "127.0.0.1", 0)
    answers: list[dict[str, Any]] = []
    master.register_message(MSG_READY, lambda msg, **_: answers.append(msg.data))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            WORKER_MODULE,
            "--master",
            f"127.0.0.1:{master.server.port}",
            "--once",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not answers and time.monotonic() < deadline:
        gevent.sleep(0.05)
    master.quit()
    try:
        _, stderr = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        _, stderr = worker.communicate()
    print(json.dumps({"ready": answers, "stderr": stderr[-1000:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
