"""``GET /metrics`` for Prometheus, on its own port (``prometheus.port``) as livekit-server
serves it; behind HTTP Basic authentication (RFC 7617) when ``prometheus.username`` and
``prometheus.password`` are set. In dev mode it is also on the main HTTP port, for convenience
(server.py); never there otherwise."""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web
from aiohttp.typedefs import Handler
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


def _authorized(request: web.Request, expected_user: bytes, expected_password: bytes) -> bool:
    given = _credentials(request.headers.get("Authorization", ""))
    # Both compared in constant time, and both always compared.
    user_ok = hmac.compare_digest(given[0] if given else b"", expected_user)
    password_ok = hmac.compare_digest(given[1] if given else b"", expected_password)
    return given is not None and user_ok and password_ok


def metrics_handler(registry: CollectorRegistry, username: str, password: str) -> Handler:
    """The ``/metrics`` handler, asking for Basic credentials when both are configured."""
    expected_user, expected_password = username.encode(), password.encode()
    protected = bool(username and password)

    async def serve(request: web.Request) -> web.StreamResponse:
        if protected and not _authorized(request, expected_user, expected_password):
            return web.Response(
                status=401, text="unauthorized", headers={"WWW-Authenticate": REALM}
            )
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return serve


def metrics_app(registry: CollectorRegistry, username: str, password: str) -> web.Application:
    """The application of the Prometheus port: ``/metrics`` only."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry, username, password))
    return app
