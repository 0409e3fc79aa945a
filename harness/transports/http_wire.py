"""The REST wire (HTTP/1.1): an httpx client, two Locust users, GET /healthz, wrk.

The client for conformance and metadata is one pooled keep-alive httpx client. The Locust
users, one per client library (`base.CLIENTS`):
- lean (the default): one keep-alive connection with a prepared request, replies parsed
  by httptools (`harness/http1.py`): Host, Content-Type and Content-Length only (with gzip,
  Content-Encoding and Accept-Encoding too);
- library: httpx's sync client, one per user: what a stock Python client pays per call.
"""

from __future__ import annotations

import functools
import gzip
import re
from pathlib import Path
from typing import Any, ClassVar

import httpx

from wiremark.payloads import errors
from wiremark.payloads.contract import HTTP_ECHO_PATH, Family
from wiremark.payloads.timing import parse_server_timing
from wiremark.payloads.transport import (
    WIRE_HTTP1,
    Transport,
    health_call,
    reply_media_types,
    request_headers,
)

from ..tls import Trust
from .base import CONNECT_TIMEOUT, LEAN, LIBRARY, Client, Driver, ToolSample


def base_url(address: str, tls: Trust | None) -> str:
    return f"{'https' if tls else 'http'}://{address}"


def verify(tls: Trust | None) -> Any:
    """httpx's `verify`: the trust's context (certificate and address checked)."""
    return tls.ssl_context() if tls else True


class HttpClient(Client):
    def __init__(
        self, transport: Transport, address: str, timeout: float = 30.0, tls: Trust | None = None
    ) -> None:
        super().__init__(transport, address, timeout, tls)
        self.media = transport.media_type
        self.reply_media = reply_media_types(transport.codec)
        self.http = httpx.Client(
            base_url=base_url(address, tls),
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            trust_env=False,
            verify=verify(tls),
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise errors.DeadlineExceeded(
                f"no answer from {self.address} in {self.timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise errors.Unreachable(f"{self.address}: {exc}") from None
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise errors.from_http(response.status_code, body)
        return response

    def exchange(self, model: str, family: Family, body: bytes) -> tuple[bytes, dict[str, float]]:
        response = self._send(
            "POST",
            self.codec.route(family, model),
            content=body,
            headers={"content-type": self.media, **request_headers(self.codec, body)},
        )
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in self.reply_media:
            raise errors.MalformedBody(
                f"reply in {media or 'no media type'}, not {self.media}", "content-type"
            )
        return response.content, parse_server_timing(response.headers.get("server-timing"))

    def metadata(self, model: str) -> dict[str, Any]:
        path, request = self.codec.metadata_call(model)
        if request:
            reply = self._send("POST", path, content=request, headers={"content-type": self.media})
        else:
            reply = self._send("GET", path)
        return self.codec.decode_metadata(reply.content)

    def close(self) -> None:
        self.http.close()


def _request(workload: Any, codec: Any, family: Family) -> tuple[bytes, dict[str, str]]:
    """The body and headers every call of a user sends (gzipped when asked)."""
    body = codec.encode_request(family, workload.model, workload.batch, workload.encoding)
    headers = {"Content-Type": codec.media_type, **request_headers(codec, body)}
    if workload.compression == "gzip":
        body = gzip.compress(body, compresslevel=6)
        headers |= {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"}
    return body, headers


@functools.cache
def _lean_user() -> type[Any]:
    from ..http1 import Connection, prepare
    from ..users import TransportUser

    class RestUser(TransportUser):
        abstract = True

        def on_start(self) -> None:
            host, port = self.address.rsplit(":", 1)
            tls = self.tls.ssl_context() if self.tls else None
            self.http = Connection(host, int(port), timeout=30, tls=tls)
            body, headers = _request(self.workload, self.codec, self.family)
            path = self.codec.route(self.family, self.workload.model)
            self.request_bytes = prepare("POST", host, int(port), path, headers, body)

        def on_stop(self) -> None:
            self.http.close()

        def send(self, sample: bool) -> tuple[bytes, str]:
            reply = self.http.exchange(self.request_bytes)
            if reply.status != 200:
                raise RuntimeError(f"HTTP {reply.status}: {reply.body[:200]!r}")
            if not sample:
                return reply.body, ""
            data = reply.body
            if reply.header("content-encoding") == "gzip":
                data = gzip.decompress(data)
            return data, reply.header("server-timing") or ""

    return RestUser


@functools.cache
def _library_user() -> type[Any]:
    from ..users import TransportUser

    class HttpxUser(TransportUser):
        """httpx's sync client (its sockets gevent's in a cell process), one per user, with
        its connection pool of one kept-alive connection."""

        abstract = True

        def on_start(self) -> None:
            self.http = httpx.Client(
                base_url=base_url(self.address, self.tls),
                timeout=30,
                trust_env=False,
                limits=httpx.Limits(max_connections=1),
                verify=verify(self.tls),
            )
            self.body, self.headers = _request(self.workload, self.codec, self.family)
            self.path = self.codec.route(self.family, self.workload.model)

        def on_stop(self) -> None:
            self.http.close()

        def send(self, sample: bool) -> tuple[bytes, str]:
            reply = self.http.post(self.path, content=self.body, headers=self.headers)
            if reply.status_code != 200:
                raise RuntimeError(f"HTTP {reply.status_code}: {reply.content[:200]!r}")
            # httpx has already decompressed a gzip reply
            return reply.content, (reply.headers.get("server-timing") or "") if sample else ""

    return HttpxUser


def _lua(body: bytes, headers: dict[str, str]) -> str:
    escaped = "".join(f"\\{b:03d}" for b in body)  # Lua decimal escapes: any bytes
    lines = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    return f"""wrk.method = "POST"
wrk.body = "{escaped}"
{lines}done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WIREMARK %d %d %d %d %.1f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50)))
end
"""


class HttpDriver(Driver):
    wire = WIRE_HTTP1
    tool = "wrk"
    tool_package = "wrk"
    echo_path = HTTP_ECHO_PATH
    clients: ClassVar[dict[str, str]] = {
        LEAN: "one keep-alive HTTP/1.1 connection per user, prepared request, httptools parser",
        LIBRARY: "httpx's sync client, one per user, one kept-alive connection",
    }

    def client(
        self, transport: Transport, address: str, timeout: float = 30.0, tls: Trust | None = None
    ) -> Client:
        return HttpClient(transport, address, timeout, tls)

    def user_base(self, client: str = LEAN) -> type[Any]:
        return _lean_user() if client == LEAN else _library_user()

    def healthy(self, address: str, codec: Any = None, tls: Trust | None = None) -> bool:
        call = health_call(codec) if codec is not None else None
        path = call[0] if call else "/healthz"
        url = base_url(address, tls) + path
        try:
            return httpx.get(url, timeout=2, verify=verify(tls)).status_code == 200
        except httpx.TransportError:
            return False

    def send(
        self,
        address: str,
        path: str,
        body: bytes,
        media: str,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        try:
            response = httpx.post(
                f"http://{address}{path}",
                content=body,
                headers={"content-type": media, **(headers or {})},
                timeout=timeout,
                trust_env=False,
            )
        except httpx.HTTPError as exc:
            raise RuntimeError(f"{address}{path}: {exc}") from None
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code} {response.text[:200]}")
        return response.content

    def tool_file(
        self, body: bytes, media: str, tmp: Path, name: str, headers: dict[str, str] | None = None
    ) -> Path:
        file = tmp / f"{name}.lua"  # a wrk script that POSTs the body
        file.write_text(_lua(body, {"Content-Type": media, **(headers or {})}))
        return file

    def tool_argv(
        self, url: str, file: Path, conns: int, duration: int, tmp: Path
    ) -> tuple[list[str] | None, list[str]]:
        argv = ["wrk", "-t1", f"-c{conns}", "-s", str(file), url]
        return [*argv, "-d1s"], [*argv, f"-d{duration}s"]

    def tool_sample(self, out: str, url: str, reply_len: int, tmp: Path) -> ToolSample:
        match = re.search(r"^WIREMARK (\d+) (\d+) (\d+) (\d+) ([\d.]+)$", out, re.M)
        if match is None:
            raise RuntimeError(f"wrk printed no summary for {url}:\n{out}")
        requests, duration_us, socket_errors, non_2xx = (int(g) for g in match.groups()[:4])
        if socket_errors or non_2xx or not requests:
            raise RuntimeError(
                f"wrk {url}: {requests} requests, {non_2xx} non-2xx, {socket_errors} socket errors"
            )
        return ToolSample(requests / (duration_us / 1e6), float(match.group(5)) / 1000.0, requests)
