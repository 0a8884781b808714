"""``GET /metrics`` for Prometheus, on its own port only (``prometheus.port``), as livekit-server
serves it; behind HTTP Basic authentication (RFC 7617) when ``prometheus.username`` and
``prometheus.password`` are set."""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

REALM = 'Basic realm="roomcast metrics", charset="UTF-8"'


def _credentials(header: str) -> tuple[bytes, bytes] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, sep, password = decoded.partition(b":")
    return (username, password) if sep else None


def basic_auth(username: str, password: str) -> Middleware:
    expected_user, expected_password = username.encode(), password.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = _credentials(request.headers.get("Authorization", ""))
        # Both compared in constant time, and both always compared.
        user_ok = hmac.compare_digest(given[0] if given else b"", expected_user)
        password_ok = hmac.compare_digest(given[1] if given else b"", expected_password)
        if given is None or not (user_ok and password_ok):
            return web.Response(
                status=401, text="unauthorized", headers={"WWW-Authenticate": REALM}
            )
        return await handler(request)

    return middleware


def metrics_app(registry: CollectorRegistry, username: str, password: str) -> web.Application:
    async def serve(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    middlewares = [basic_auth(username, password)] if username and password else []
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/metrics", serve)
    return app
