"""The HTTP edge: one aiohttp application on one port (health, Twirp, signalling)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from roomcast.edge.client_address import CLIENT_ADDRESS, ClientAddresses

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Max-Age": "86400",
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def cors_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Browsers call the API and ``/rtc/validate`` cross-origin: allow any origin (as LiveKit)."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers=CORS_HEADERS)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(CORS_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(CORS_HEADERS)
    return response


async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


def client_address_middleware(addresses: ClientAddresses) -> Middleware:
    """Resolve the client address once per request (edge.client_address)."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        request[CLIENT_ADDRESS] = addresses.of(request)
        return await handler(request)

    return middleware


def create_app(max_body_size: int, addresses: ClientAddresses | None = None) -> web.Application:
    middlewares = [client_address_middleware(addresses or ClientAddresses()), cors_middleware]
    return web.Application(client_max_size=max_body_size, middlewares=middlewares)
