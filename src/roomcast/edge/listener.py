"""The HTTP listener: what happens to a connection before any route sees a request.

- Request lines and header fields of up to ``HEAD_FIELD_BYTES``, so a token of up to
  ``auth.MAX_TOKEN_LENGTH`` fits in the ``access_token`` query or the Authorization header
  (aiohttp's default of 8190 bytes refuses tokens carrying a few KiB of metadata, which
  refreshed tokens do). At most ``HEAD_FIELDS`` header fields.
- A malformed or oversized request head gets a bare status line and is logged without its
  content: aiohttp's own answer repeats the start of the offending line, which for ``/rtc``
  is the token.
- The unread rest of a refused request's body is discarded for at most ``LINGERING_TIME``
  seconds, then the connection closes (aiohttp's default of 10 s holds the handler that long,
  even after the client has gone).
- A connection that has not sent a complete request head ``idle_timeout`` seconds after it
  opened (or after its last response) is closed: aiohttp's keep-alive timer, which since 3.14
  also runs before the first request, so silent and trickling (slowloris) connections go.
- At most ``connections_per_ip`` open connections per client address (IPv6: per /64);
  trusted proxies are exempt, since every client behind them shares their address.

aiohttp has no public hook for the last three, so this module subclasses its low-level
``web.Server`` and ``web.RequestHandler`` and overrides ``AppRunner._make_server``; aiohttp is
pinned below 4 in pyproject.toml, and tests/integration/test_edge_hardening.py covers each.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

from roomcast.auth import MAX_TOKEN_LENGTH
from roomcast.edge.client_address import ClientAddresses, limit_key
from roomcast.telemetry import Metrics

log = logging.getLogger(__name__)

HEAD_FIELD_BYTES = MAX_TOKEN_LENGTH + 8 * 1024  # a full-size token and the rest of its line
HEAD_FIELDS = 64
LINGERING_TIME = 1.0


@dataclass(frozen=True)
class ListenerLimits:
    idle_timeout: float = 20.0  # seconds; 0 keeps aiohttp's own (an hour)
    connections_per_ip: int = 1024  # 0: no cap


class ConnectionCap:
    """Open connections per client address; refuses those beyond the cap."""

    def __init__(self, cap: int, addresses: ClientAddresses, metrics: Metrics | None) -> None:
        self._cap = cap
        self._addresses = addresses
        self._metrics = metrics
        self._open: Counter[str] = Counter()

    def admit(self, peer: str) -> str | None:
        """The key the connection counts under, or None when it must be closed."""
        if not self._cap or self._addresses.is_trusted(peer):
            return ""
        key = limit_key(peer)
        if self._open[key] >= self._cap:
            if self._metrics is not None:
                self._metrics.limit_hit("connections_per_ip", key)
            return None
        self._open[key] += 1
        return key

    def release(self, key: str) -> None:
        if key:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]

    def open_connections(self, peer: str) -> int:
        return self._open.get(limit_key(peer), 0)


class _EdgeRequestHandler(web.RequestHandler):
    def __init__(self, manager: _EdgeServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._cap = manager.cap
        self._cap_key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._cap_key = self._cap.admit(str(peer[0]) if peer else "")
        if self._cap_key is None:
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._cap_key is not None:
            self._cap.release(self._cap_key)
            self._cap_key = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        # A bad request head: answer with its status only, and log no part of it.
        log.debug("bad request head from %s: %s", request.remote, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        try:
            text = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            text = str(status)
        response = web.Response(status=status, text=text)
        response.force_close()
        return response


class _EdgeServer(web.Server):
    cap: ConnectionCap

    def __call__(self) -> web.RequestHandler:
        return _EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """An AppRunner whose connections get the limits above."""

    def __init__(
        self,
        app: web.Application,
        limits: ListenerLimits,
        addresses: ClientAddresses,
        metrics: Metrics | None = None,
        **kwargs: Any,
    ) -> None:
        handler_args: dict[str, Any] = {
            "max_line_size": HEAD_FIELD_BYTES,
            "max_field_size": HEAD_FIELD_BYTES,
            "max_headers": HEAD_FIELDS,
            "lingering_time": LINGERING_TIME,
        }
        if limits.idle_timeout:
            handler_args["keepalive_timeout"] = limits.idle_timeout
        super().__init__(app, **handler_args, **kwargs)
        self._cap = ConnectionCap(limits.connections_per_ip, addresses, metrics)

    @property
    def cap(self) -> ConnectionCap:
        return self._cap

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        server = _EdgeServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        server.cap = self._cap
        return server
