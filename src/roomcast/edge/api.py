"""The Twirp endpoint: ``POST /twirp/livekit.<Service>/<Method>`` (reference 08 §8.1)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from aiohttp import web

from roomcast.auth import AuthError, Claims, TokenVerifier
from roomcast.edge import twirp
from roomcast.edge.roomservice import METHODS, Method
from roomcast.errors import PermissionDeniedError, RoomcastError
from roomcast.rooms.admin import RoomAdmin
from roomcast.telemetry import Metrics

log = logging.getLogger(__name__)

ROOM_SERVICE = "livekit.RoomService"


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.query.get("access_token", "")


class TwirpEndpoint:
    def __init__(
        self,
        verifier: TokenVerifier,
        admin: RoomAdmin,
        metrics: Metrics,
        services: Mapping[str, Mapping[str, Method]] | None = None,
    ) -> None:
        self._verifier = verifier
        self._admin = admin
        self._metrics = metrics
        # Service name → method name → handler; ``services`` adds services or overrides methods.
        self._services: dict[str, dict[str, Method]] = {ROOM_SERVICE: dict(METHODS)}
        for name, methods in (services or {}).items():
            self._services.setdefault(name, {}).update(methods)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/twirp/{service}/{method}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method_name = request.match_info["method"]
        known = method_name in self._services.get(request.match_info["service"], {})
        label = method_name if known else "unknown"
        started = time.perf_counter()
        response = await self._handle(request)
        self._metrics.api_requests.labels(label, str(response.status)).inc()
        self._metrics.api_seconds.labels(label).observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        service = request.match_info["service"]
        method_name = request.match_info["method"]
        if request.method != "POST":
            return twirp.TwirpError(
                "bad_route", f"unsupported method {request.method} (only POST is allowed)"
            ).to_response()
        method = self._services.get(service, {}).get(method_name)
        if method is None:
            return twirp.TwirpError(
                "bad_route", f"no handler for path {request.path!r}"
            ).to_response()
        content_type = twirp.content_type_of(request)
        if content_type not in (twirp.PROTOBUF, twirp.JSON):
            return twirp.TwirpError(
                "bad_route", f"unexpected Content-Type: {content_type or '(none)'}"
            ).to_response()

        # Authentication first: a bad token is a plain 401, as LiveKit's auth middleware does.
        token = bearer_token(request)
        claims: Claims | None = None
        if token:
            try:
                claims = self._verifier.verify(token)
            except AuthError as exc:
                return web.Response(status=401, text=str(exc))

        body = await request.read()  # aiohttp answers 413 past client_max_size
        message = method.request_type()
        try:
            twirp.decode(body, content_type, message)
            if claims is None:
                raise PermissionDeniedError()
            response = await method.handler(self._admin, claims, message)
        except twirp.TwirpError as exc:
            return exc.to_response()
        except RoomcastError as exc:
            return twirp.TwirpError.from_domain(exc).to_response()
        except Exception:
            log.exception("%s.%s failed", service, method_name)
            return twirp.TwirpError("internal", "internal error").to_response()
        return twirp.encode(response, content_type)
