"""bench knows its servers: after every cell it checks each server it started. A server
that died is reported in one line (its exit status and the last lines of its log),
restarted once, and the cell it died in is marked "server down", never client-bound; a
server that dies again stays down, and the cells left for it are recorded as lost without
being run. The run then exits non-zero."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

from .execution import Target
from .launch import ServerProcess, ServerStartError
from .record import SERVER_DOWN

LOG_LINES = 3  # of a dead server's log, in its one-line report


@dataclass
class Watch:
    """The servers a run started, keyed as its targets are."""

    procs: dict[Any, ServerProcess]
    targets: dict[Any, Target]
    stack: ExitStack  # restarted servers are stopped with the run
    say: Callable[[str], None]
    restarted: set[Any] = field(default_factory=set)
    down: dict[Any, str] = field(default_factory=dict)  # key -> why, for good
    deaths: list[str] = field(default_factory=list)  # one line per death

    def check(self) -> dict[Any, str]:
        """Every server that died since the last check: key -> why. Each is restarted
        once; one that cannot be, or dies a second time, stays down."""
        died: dict[Any, str] = {}
        for key, proc in list(self.procs.items()):
            if key in self.down:
                continue
            ended = proc.ended()
            if ended is None:
                continue
            tail = " | ".join(line.strip() for line in proc.log[-LOG_LINES:] if line.strip())
            why = f"the {proc.transport} server ({proc.address}) died: {ended}"
            died[key] = why
            line = f"wiremark: {why}; its log ends: {tail or '(empty)'}"
            if key in self.restarted:
                self.down[key] = why
                self.say(f"{line}; it died before, so it stays down")
            else:
                self.say(f"{line}; restarting it once")
                self._restart(key, proc, why)
            self.deaths.append(why)
        return died

    def _restart(self, key: Any, old: ServerProcess, why: str) -> None:
        self.restarted.add(key)
        new = old.fresh()
        self.stack.callback(new.stop)
        try:
            new.start()
            new.wait_ready(300)
        except ServerStartError as exc:
            first = str(exc).strip().splitlines()[0]
            self.down[key] = f"{why}; the restart failed: {first}"
            self.say(f"wiremark: restarting the {old.transport} server failed: {first}")
            return
        self.procs[key] = new
        pid = new.proc.pid if new.proc else None
        self.targets[key] = replace(self.targets[key], address=new.address, pid=pid, tls=new.trust)
        self.say(f"wiremark: the {new.transport} server is back on {new.address}")


def mark_down(cell: dict[str, Any], why: str) -> dict[str, Any]:
    """The cell a server died in: invalid, with why, and not client-bound (a load generator
    spinning on refused connections measures neither side)."""
    cell["valid"] = False
    cell["invalid_reasons"] = [f"{SERVER_DOWN}: {why}", *cell.get("invalid_reasons", [])]
    cell["client_bound"] = False
    cell["scaling"] = SERVER_DOWN
    return cell
