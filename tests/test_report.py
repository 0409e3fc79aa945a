"""`wiremark report`: the self-contained HTML report, as written and as a person sees it.

Synthetic result files only (tests/synthetic.py): no server is started. The Chromium test
drives headless Chromium over the DevTools protocol (the `websockets` client that
uvicorn[standard] installs) and leaves a screenshot at /tmp/wiremark-report.png.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from base64 import b64decode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import synthetic
from wiremark.reports import records, report

from . import cli

PLOTS = (
    "plot-percentiles",
    "plot-throughput",
    "plot-open-loop",
    "plot-bytes",
    "plot-cost",
    "plot-cpu",
)
SCREENSHOT = Path("/tmp/wiremark-report.png")
# A reference to anything off the page: src=/href= to a URL, CSS url() or @import, a script.
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//)"""
    r"""|url\(\s*["']?\s*(?:[a-z]+:)?//|@import|<script|<link\b|<iframe|<object|<embed""",
    re.I,
)


wiremark = functools.partial(cli.wiremark, timeout=180)


def figures(html: str) -> dict[str, str]:
    return dict(re.findall(r'<figure id="(plot-[\w-]+)">(.*?)</figure>', html, re.S))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("report")
    before = synthetic.write_run(base / "before", run_id="before")
    after = synthetic.write_run(base / "after", run_id="after", slowdown=1.3, seed=1)
    return {
        "before": before,
        "after": after,
        "one": report.render([records.load(before)], base / "one.html"),
        "two": report.write_report([before, after], base / "out" / "two.html"),
    }


def test_single_run_report(rendered: dict[str, Path]) -> None:
    html = rendered["one"].read_text()
    assert not EXTERNAL.findall(html), "the report must not load anything from elsewhere"
    sections = [
        'id="verdict"',
        'id="claim"',
        'id="plots"',
        'id="conformance"',
        'id="validity"',
        'id="cells"',
        'id="environment"',
    ]
    positions = [html.index(s) for s in sections]
    assert positions == sorted(positions), "sections out of order"
    assert 'id="comparison"' not in html
    # The verdict, per model, in words with numbers and a bootstrap interval (3 trials).
    for model in ("iris", "face"):
        assert f"{model}, batch 1, concurrency 8:" in html
    assert "mnist, batch 1, raw pixels, concurrency 8:" in html
    assert re.search(r"gRPC serves 1\.\d\d× the requests of JSON \(95% CI 1\.\d\d–1\.\d\d×\)", html)
    assert "at 0.7" in html and "the p99" in html
    # The tutorials' claim, answered: the synthetic gRPC is about 1.3x JSON, not 7-10x.
    assert "Is gRPC 7–10× faster than REST?" in html
    assert re.search(r"No: at most 1\.3\d× here", html)
    assert "gRPC beats JSON at every concurrency measured (1–8 users)" in html
    # Conformance matrix: 3 models x 3 transports, all passing, with sampled-under-load counts.
    conformance = html[html.index('id="conformance"') : html.index('id="validity"')]
    assert conformance.count(">pass<") == 9 and "sampled 90 under load, 0 off" in conformance
    # Validity is spelled out; the slow face cells have under 1,000 requests.
    assert re.search(r"\d+ of 27 cells flagged", html)
    # One inline SVG per plot, each inside its figure; no plot skipped.
    assert html.count("<svg") == len(PLOTS)
    found = figures(html)
    for plot in PLOTS:
        assert "<svg" in found[plot], f"{plot} was not drawn"
        assert "Skipped" not in found[plot]
    # Ids inside the SVGs are made unique per plot (glyph ids would otherwise collide).
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    assert "machine.cpu_model" in html and "placement.server_cpus" in html


def test_comparison_report(rendered: dict[str, Path]) -> None:
    html = rendered["two"].read_text()
    assert not EXTERNAL.findall(html)
    assert html.index('id="claim"') < html.index('id="comparison"') < html.index('id="plots"')
    assert "A: before (baseline)" in html and "B: after" in html
    # The second run is 30% slower everywhere: the comparison says so, cell by cell.
    change = re.search(r"median change p50 \+(\d+\.\d)%, throughput -(\d+\.\d)%", html)
    assert change and 20 < float(change[1]) < 40 and 15 < float(change[2]) < 30
    # Red where `wiremark gate` finds a regression: p50 and rps (its default rules) in every
    # cell; p99 has no default rule, so its changes stay uncoloured.
    assert "27 cells worse as the gate judges them (p50:+5%, rps:-5%" in html
    assert html.count('class="num worse"') == 27 * 2
    assert "Against the baseline before, same cell: gRPC -" in html
    assert html.count("<svg") == len(PLOTS)
    assert all("<svg" in svg for svg in figures(html).values())


def test_sparse_results_are_handled(tmp_path: Path) -> None:
    """One trial, no open loop, external servers (no server-side figures), no wire bytes,
    invalid and erroring cells, a missing p99, a model measured over gRPC only."""
    path = synthetic.write_run(tmp_path / "sparse", run_id="sparse", trials=1)
    doc = json.loads(path.read_text())
    cells = [c for c in doc["cells"] if c["mode"] == "closed" and c["model"] != "face"]
    gone = [
        *("server_cpu_ms", "server_decode_ms", "server_infer_ms", "server_encode_ms"),
        *("wire_up_bytes", "wire_down_bytes", "server_peak_rss_mb", "sampled", "valid"),
    ]
    for cell in cells:
        cell.update(dict.fromkeys(gone))
    cells[0].update(valid=False, invalid_reasons=["ran 2.1 s of the 5 s minimum"])
    cells[1]["errors"] = 7
    cells[2]["client_bound"] = True
    cells[3]["p99_ms"] = None
    cells[4]["rps"] = None
    cells.append({**cells[0], "model": "iris_rf", "valid": True, "invalid_reasons": []})
    doc.update(cells=cells, finished=None, conformance=[])
    path.write_text(json.dumps(doc))

    html = report.render([records.load(path)], tmp_path / "sparse.html").read_text()
    assert "one trial, no interval" in html
    assert "Only gRPC was measured here" in html
    assert "Skipped: this run has no open-loop cells" in html
    assert "Wire bytes were not measured" in html
    assert "Not recorded: server CPU" in html
    assert "No conformance check was recorded" in html
    assert "3 of 13 cells flagged: 1 invalid, 1 with errors, 1 client-bound" in html
    assert "ran 2.1 s of the 5 s minimum" in html
    assert "not finished" in html
    assert html.count("<svg") == len(PLOTS) - 1

    empty = records.Run(tmp_path / "empty.json", {"schema_version": 1, "run_id": "empty"})
    html = report.render([empty], tmp_path / "empty.html").read_text()
    assert "No cells in this run." in html and "<svg" not in html


CELL = re.compile(r'<td(?: class="([^"]*)")?>([^<]*)(?:<span class="detail">([^<]*)</span>)?</td>')


def comparison_rows(html: str) -> dict[tuple[str, ...], list[tuple[str, str, str]]]:
    """The comparison table: (model, transport, load, payload) -> its cells after those, each
    (class, text, detail)."""
    section = html[html.index('id="comparison"') : html.index('id="plots"')]
    rows = {}
    for row in re.findall(r"<tr>(<td.*?)</tr>", section):
        cells = CELL.findall(row)
        rows[tuple(text for _, text, _ in cells[:4])] = cells[4:]
    return rows


def test_comparison_colours_follow_the_gate(tmp_path: Path) -> None:
    """A change is red exactly where `wiremark gate` (default rules and alpha) finds a
    regression: p50 +30% over 5 trials a side is one; the same rise over 1 trial a side
    cannot be judged, so it stays neutral ("not judged") and the gate passes it."""
    base = synthetic.run_doc(run_id="base", trials=5, seed=3)
    base["cells"] = [
        c
        for c in base["cells"]
        if c["model"] == "iris"
        and c["mode"] == "closed"
        and (c["trial"] == 0 or (c["transport"], c["concurrency"]) != ("msgpack", 8))
    ]
    cur = json.loads(json.dumps(base))
    cur["run_id"] = "cur"
    raised = 0
    for c in cur["cells"]:
        if c["concurrency"] == 8 and c["transport"] in ("grpc", "msgpack"):
            c["p50_ms"] *= 1.3
            raised += 1
    assert raised == 5 + 1
    paths = [synthetic.write_doc(tmp_path / name, doc) for name, doc in (("b", base), ("c", cur))]
    html = report.write_report(paths, tmp_path / "report.html").read_text()

    rows = comparison_rows(html)
    # after the keys: p50 A, p50 B, Δ, p99 A, p99 B, Δ, rps A, rps B, Δ
    significant = rows["iris", "gRPC", "8 users", "batch 1"]
    assert significant[2][:2] == ("num worse", "+30.0%")
    too_few = rows["iris", "MessagePack", "8 users", "batch 1"]
    assert too_few[2] == ("num judged-not", "+30.0%", "not judged")
    assert too_few[8][0] == "num judged-not"  # rps: 1 trial too
    assert too_few[5][0] == significant[5][0] == "num"  # p99: no default rule, not coloured
    assert html.count('class="num worse"') == 1 and 'class="num better"' not in html
    assert "1 cells worse as the gate judges them" in html and "1 not judged" in html

    # The gate, on the same files, fails on that cell only and does not judge the other.
    out = tmp_path / "gate.json"
    result = wiremark("gate", "--baseline", paths[0], "--current", paths[1], "--json", out)
    assert result.returncode == 1, result.stderr
    verdict = json.loads(out.read_text())
    assert [(r["cell"], r["rule"]) for r in verdict["regressions"]] == [
        ("iris/grpc closed c=8 batch=1 raw", "p50:+5%")
    ]
    assert {(r["cell"], r["rule"]) for r in verdict["insufficient"]} == {
        ("iris/msgpack closed c=8 batch=1 raw", "p50:+5%"),
        ("iris/msgpack closed c=8 batch=1 raw", "rps:-5%"),
    }


def test_schema_1_file_still_loads(tmp_path: Path) -> None:
    """A schema-1 file (no "transports", no transport_tax_ms) loads, gets its transport tax
    filled in and the transports it had then, and renders as before."""
    doc = synthetic.run_doc(run_id="old", trials=1)
    doc["schema_version"] = 1
    del doc["transports"]
    for c in doc["cells"]:
        del c["transport_tax_ms"]
        del c["client"]
    path = synthetic.write_doc(tmp_path / "old", doc)

    run = records.load(path)
    assert run.meta["schema_version"] == 1
    # what the load users ran then: grpcio for gRPC, the lean HTTP/1.1 connection for REST
    assert {(c["transport"], c["client"]) for c in run.cells} == {
        ("grpc", "library"),
        ("json", "lean"),
        ("msgpack", "lean"),
    }
    assert run.transports == [dict(t) for t in records.LEGACY_TRANSPORTS]
    assert [t["name"] for t in run.transports] == ["grpc", "json", "msgpack"]
    for c in run.cells:
        assert c["transport_tax_ms"] == round(c["p50_ms"] - c["inprocess_ms"], 4)
    # what it had then is what the current synthetic run says of its transports
    assert run.transports == synthetic.TRANSPORTS

    html = report.render([run], tmp_path / "old.html").read_text()
    assert re.search(r"gRPC serves 1\.\d\d× the requests of JSON", html)
    assert re.search(r"No: at most 1\.3\d× here", html)
    assert ">MessagePack<" in html and "body B MsgPack" in html
    cells = html[html.index('id="cells"') : html.index('id="environment"')]
    assert "transport tax" in cells
    tax = cells[cells.index("transport tax") :]
    assert "—" not in tax[: tax.index("</table>")]  # every tax figure filled in
    assert html.count("<svg") == len(PLOTS)
    assert "gRPC measured with the stock client library only" in html


def test_client_libraries_are_shown_beside_the_server(tmp_path: Path) -> None:
    """A run with both client libraries: the verdict, the claim and the plots judge the
    server by the lean client's cells; the client-cost section shows both, with the
    library's cost as a ratio of the lean client's."""
    lean = synthetic.run_doc(run_id="lean", trials=2)
    both = synthetic.run_doc(run_id="both", trials=2, clients=("lean", "library"))
    html = {}
    for name, doc in (("lean", lean), ("both", both)):
        run = records.load(synthetic.write_doc(tmp_path / name, doc))
        html[name] = report.render([run], tmp_path / f"{name}.html").read_text()

    def section(text: str, start: str, end: str) -> str:
        return text[text.index(f'id="{start}"') : text.index(f'id="{end}"')]

    for part in ("verdict", "claim"):  # the same figures: the library cells are not in them
        after = {"verdict": "claim", "claim": "clients"}[part]
        assert section(html["both"], part, after) == section(html["lean"], part, after)
    assert "stock client library only" not in html["both"]
    clients = section(html["both"], "clients", "plots")
    ratios = {
        t: f"{synthetic.LIBRARY_CPU[t] / synthetic.LEAN_CPU:.2f}×"
        for t in ("grpc", "json", "msgpack")
    }
    assert (
        "Client CPU per request of the stock client library against the lean client "
        f"(median over cells): gRPC {ratios['grpc']}, JSON {ratios['json']}, "
        f"MessagePack {ratios['msgpack']}."
    ) in clients
    assert "client CPU ms/req, library" in clients and "client CPU library ÷ lean" in clients
    rows = re.findall(r"<tr><td>", clients)
    assert len(rows) == 3 * 3 * 2  # models × transports × concurrencies, one row each
    only = section(html["lean"], "clients", "plots")
    assert "Measured with the lean client only" in only and "library ÷ lean" not in only
    cells = section(html["both"], "cells", "environment")
    assert "batch 1, library client" in cells
    assert figures(html["both"]).keys() == figures(html["lean"]).keys()


def test_transport_tax_is_recorded(tmp_path: Path) -> None:
    assert records.transport_tax(1.23456789, 0.2) == 1.0346
    assert records.transport_tax(None, 0.2) is None and records.transport_tax(1.0, None) is None
    assert records.transport_tax(float("nan"), 0.2) is None
    i = records.CELL_FIELDS.index("inprocess_ms")
    assert records.CELL_FIELDS[i + 1] == "transport_tax_ms"
    assert records.PERCENTILE_FIELDS == ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms")
    writer = records.ResultWriter(tmp_path, {"run_id": "w", "transports": synthetic.TRANSPORTS})
    writer.add_cell({"model": "iris", "transport": "grpc", "p50_ms": 0.5, "inprocess_ms": 0.1})
    writer.add_cell({"model": "iris", "transport": "json", "p50_ms": 0.5})
    run = records.load(tmp_path)
    assert run.meta["schema_version"] == records.SCHEMA_VERSION == 6
    assert [c["transport_tax_ms"] for c in run.cells] == [0.4, None]
    assert run.transports == synthetic.TRANSPORTS


def test_transports_come_from_the_file(tmp_path: Path) -> None:
    """Labels, order and wires are the file's: relabelled and reordered transports, a second
    gRPC-wire transport, and one the file does not describe (last, labelled by its name)."""
    doc = synthetic.run_doc(run_id="plugins", trials=1)
    grpc, json_, msgpack = (dict(t) for t in synthetic.TRANSPORTS)
    json_["label"] = json_["short_label"] = "REST-JSON"
    tfs = {**grpc, "name": "tfs", "label": "TF Serving", "short_label": "TFS", "api": "tfserving"}
    doc["transports"] = [msgpack, grpc, tfs, json_]
    extra = []
    for c in doc["cells"]:
        if c["transport"] == "grpc":
            extra.append({**c, "transport": "tfs", "rps": c["rps"] * 0.5})
            extra.append({**c, "transport": "mystery"})
    doc["cells"] += extra
    run = records.load(synthetic.write_doc(tmp_path / "p", doc))
    html = report.render([run], tmp_path / "p.html").read_text()

    assert "REST-JSON" in html and ">JSON<" not in html
    assert "of MessagePack&#39;s and REST-JSON&#39;s" in html  # the claim's REST side, in order
    # Crossovers are against the first HTTP/1.1 transport in the file's order: MessagePack.
    assert "gRPC/TF Serving starts to beat MessagePack" in html
    assert "iris, batch 1: gRPC beats MessagePack at every concurrency measured" in html
    assert "iris, batch 1: TF Serving does not beat MessagePack at any concurrency" in html
    assert "req/s TFS÷MsgPack" in html and "req/s gRPC÷REST-JSON" in html
    # The conformance matrix and the tables follow the file's order, the stranger last.
    conformance = html[html.index('id="conformance"') : html.index('id="validity"')]
    heads = re.findall(r"<th>([^<]+)</th>", conformance)
    assert heads == ["model", "MessagePack", "gRPC", "TF Serving", "REST-JSON", "mystery"]
    cells = html[html.index('id="cells"') : html.index('id="environment"')]
    first = re.findall(r"<tr><td>iris</td><td>([^<]+)</td><td>1 user</td>", cells)[:5]
    assert first == ["MessagePack", "gRPC", "TF Serving", "REST-JSON", "mystery"]


# ---------------------------------------------------------------------------------------
# Chromium, as a person sees the report


class DevTools:
    """A minimal DevTools-protocol client over one page's websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.last = 0

    def _recv(self, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from Chromium")
        return json.loads(self.ws.recv(timeout=left))

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self.last += 1
        ident = self.last
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(deadline)
            if msg.get("id") == ident:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(i)
            msg = self._recv(deadline)
            if "method" in msg:
                self.events.append(msg)

    def errors(self) -> list[str]:
        out = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(str(params.get("exceptionDetails")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(str(params["entry"].get("text")))
        return out


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        pytest.skip("no chromium binary on PATH (CI installs Debian's chromium)")
    from websockets.sync.client import connect  # from uvicorn[standard]

    proc = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,4000",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    found = threading.Event()

    def drain() -> None:  # keep reading stderr so Chromium never blocks on it
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "DevTools listening on ws://" in line:
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert found.wait(60), "Chromium did not start:\n" + "".join(lines[-20:])
        port = re.search(r"ws://[^:/]+:(\d+)/", "".join(lines))[1]  # type: ignore[index]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


LAYOUT = """JSON.stringify({
  plots: [...document.querySelectorAll('figure')].map(f => {
    const svg = f.querySelector('svg'), r = svg ? svg.getBoundingClientRect() : null;
    return {id: f.id, w: r ? r.width : 0, h: r ? r.height : 0,
            shapes: svg ? svg.querySelectorAll('path, use').length : 0};
  }),
  resources: performance.getEntriesByType('resource').map(e => e.name),
  pageWidth: document.documentElement.scrollWidth, viewWidth: window.innerWidth,
  height: document.documentElement.scrollHeight,
})"""


def test_report_in_chromium(chromium: DevTools, rendered: dict[str, Path], tmp_path: Path) -> None:
    for domain in ("Page", "Runtime", "Log"):
        chromium.call(f"{domain}.enable")
    chromium.call(
        "Emulation.setDeviceMetricsOverride",
        width=1400,
        height=4000,
        deviceScaleFactor=1,
        mobile=False,
    )
    for name, shot in (("one", SCREENSHOT), ("two", SCREENSHOT.with_stem("wiremark-compare"))):
        chromium.events.clear()
        chromium.call("Page.navigate", url=rendered[name].resolve().as_uri())
        chromium.wait_for("Page.loadEventFired")
        value = chromium.call("Runtime.evaluate", expression=LAYOUT, returnByValue=True)
        layout = json.loads(value["result"]["value"])
        assert [p["id"] for p in layout["plots"]] == list(PLOTS)
        for plot in layout["plots"]:
            assert plot["w"] > 400 and plot["h"] > 150, f"{name}: {plot} is not visible"
            assert plot["shapes"] > 20, f"{name}: {plot} looks empty"
        assert layout["resources"] == [], "the report loaded something from elsewhere"
        assert layout["pageWidth"] <= layout["viewWidth"], "the page scrolls sideways"
        assert chromium.errors() == [], "console errors"
        height = min(int(layout["height"]), 16000)
        png = chromium.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1},
        )
        path = tmp_path / f"{name}.png"
        path.write_bytes(b64decode(png["data"]))
        assert path.stat().st_size > 50_000
        shutil.copyfile(path, shot)


# ---------------------------------------------------------------------------------------
# the CLI


def test_cli_writes_the_report(rendered: dict[str, Path], tmp_path: Path) -> None:
    result = wiremark("report", str(rendered["before"].parent), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "report.html"  # the default --out
    assert "Verdict" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such result file"),
        (
            '{"schema_version": 99, "cells": []}',
            "schema_version 99; this wiremark reads 1, 2, 3, 4, 5 and 6",
        ),
        ("not json", "not a wiremark result file"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "report.html"
    result = wiremark("report", str(path), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith("wiremark: error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
