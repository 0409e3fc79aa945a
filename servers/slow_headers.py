"""Slow request headers on the HTTP server: uvicorn's httptools protocol, with an idle limit
on the header section of every request.

uvicorn times out a keep-alive connection between requests, but not one that sends half a
request's headers and holds: it would hold a socket and its buffers for ever (slowloris).
This protocol arms a timer when a request's first byte arrives, re-arms it on every chunk
of header bytes (an idle limit, not a deadline: a slow but steady client is never cut off),
and cancels it once the headers are complete, where the body's own idle limit takes over
(`read_body` in `servers/http_server.py`). A request whose headers stopped arriving gets 408
naming them, and its connection is closed. `HEADER_DEADLINE_S` bounds the whole header
section however steadily it trickles in. A connection opened and left silent is not timed
out here: a load generator opens its connections before its first request is due, and a
silent socket holds no request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wiremark.payloads import rest

log = logging.getLogger(__name__)

# The longest a request's header section may take, however steadily it arrives: 60 s
# carries 1 kB of headers at 17 bytes a second.
HEADER_DEADLINE_S = 60.0


def protocol(idle_s: float) -> type[asyncio.Protocol]:
    """The httptools protocol with a header idle limit of `idle_s` seconds (0: none)."""
    if not idle_s:
        return HttpToolsProtocol

    class SlowHeaderLimit(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._in_headers = False  # a request's first byte came, its headers not all
            self._header_bytes = 0
            self._header_start = 0.0

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_headers:
                self._header_bytes += len(data)
                self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers, self._header_bytes = True, 0
            self._header_start = time.monotonic()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            super().on_headers_complete()

        def _arm(self) -> None:
            self._disarm()
            left = HEADER_DEADLINE_S - (time.monotonic() - self._header_start)
            self._header_timer = self.loop.call_later(max(0.0, min(idle_s, left)), self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or not self._in_headers:
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            elapsed = time.monotonic() - self._header_start
            log.info("client %s: request headers stopped arriving, answered 408", client)
            message = (
                f"the request headers stopped arriving: no bytes for {idle_s:g} s after "
                f"{self._header_bytes}"
                if elapsed < HEADER_DEADLINE_S
                else f"the request headers took longer than {HEADER_DEADLINE_S:g} s"
            )
            body = rest.dump_json({"error": message, "field": "headers"})
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()

    return SlowHeaderLimit
