"""Browser routes: the playground at ``/``, the dashboard, their static files and dev tokens.

``GET /`` stays the health check ("OK") that load balancers probe; only a browser (``Accept``
with ``text/html``) gets the playground page, and only when ``playground.enabled`` (on by
default with ``--dev``). ``/playground/token`` and ``/playground/admin-token`` mint tokens for
the pages, and exist only when the configured keys are exactly the public dev pair
``devkey: secret`` (so they give nobody anything they could not sign themselves).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from roomcast import __version__
from roomcast.auth import Claims, VideoGrant, create_token
from roomcast.config import DEV_KEYS, Config
from roomcast.edge.http import health
from roomcast.errors import RoomcastError
from roomcast.rooms.manager import RoomManager, validate_room_name
from roomcast.rooms.participant import Participant
from roomcast.web import STATIC_DIR, livekit_client_version

log = logging.getLogger(__name__)

JOIN_TOKEN_TTL = 6 * 3600.0
ADMIN_TOKEN_TTL = 600.0

# The pages load only their own scripts and styles; media and signalling may go to any server
# (a pasted token can be for another one).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss: http: https:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Vary": "Accept",
}
NO_STORE = {"Cache-Control": "no-store"}


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "").lower()


def ws_url(request: web.Request) -> str:
    """The signalling URL as the browser reached us (``ws://<Host>``)."""
    scheme = "wss" if request.secure else "ws"
    return f"{scheme}://{request.host}"


class WebEndpoint:
    def __init__(
        self,
        config: Config,
        rooms: RoomManager,
        static_dir: Path = STATIC_DIR,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self._healthy = healthy
        self._config = config
        self._rooms = rooms
        self._static = static_dir
        self.enabled = config.playground.enabled
        # Only the well-known dev pair: anyone can sign tokens with it anyway.
        self.dev_tokens = self.enabled and config.keys == DEV_KEYS
        self._api_key, self._api_secret = next(iter(DEV_KEYS.items()))

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.handle_root)
        if not self.enabled:
            return
        app.router.add_get("/dashboard", self.handle_dashboard)
        app.router.add_get("/playground/config", self.handle_config)
        if self.dev_tokens:
            app.router.add_get("/playground/token", self.handle_token)
            app.router.add_get("/playground/admin-token", self.handle_admin_token)
        app.router.add_static("/static/", self._static, follow_symlinks=False)

    def announce(self, port: int) -> None:
        """Log the playground's URL; called once every port is bound (server.py)."""
        if not self.enabled:
            return
        host = (self._config.bind_addresses or ["127.0.0.1"])[0]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        log.info("playground: open http://%s:%d/ in a browser (dashboard: /dashboard)", host, port)

    def _page(self, name: str) -> web.FileResponse:
        return web.FileResponse(self._static / name, headers=PAGE_HEADERS)

    async def handle_root(self, request: web.Request) -> web.StreamResponse:
        if self.enabled and wants_html(request):
            return self._page("playground.html")
        if not self._healthy():
            # As livekit-server: a node that cannot reach Redis tells its load balancer.
            return web.Response(status=503, text="routing store (Redis) unreachable")
        response = await health(request)
        response.headers["Vary"] = "Accept"
        return response

    async def handle_dashboard(self, request: web.Request) -> web.StreamResponse:
        return self._page("dashboard.html")

    async def handle_config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "dev_tokens": self.dev_tokens,
                "version": __version__,
                "livekit_client": livekit_client_version(),
            },
            headers=NO_STORE,
        )

    async def handle_token(self, request: web.Request) -> web.Response:
        """A join token for the playground (dev keys only)."""
        room = request.query.get("room", "").strip()
        identity = request.query.get("identity", "").strip()
        name = request.query.get("name", "").strip()
        limits = self._config.limit
        try:
            validate_room_name(room, limits)
        except RoomcastError as exc:
            return _error(400, str(exc))
        if not identity:
            return _error(400, "identity is required")
        if len(identity.encode()) > limits.max_participant_identity_length:
            return _error(400, "identity is too long")
        if len(name.encode()) > limits.max_participant_name_length:
            return _error(400, "name is too long")
        grant = VideoGrant(
            room_join=True,
            room=room,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
            can_update_own_metadata=True,
        )
        existing = self._rooms.get(room)
        if existing is not None:  # a clear "room is full" before the browser even connects
            newcomer = Participant.from_claims(
                Claims(api_key=self._api_key, identity=identity, name=name, video=grant)
            )
            try:
                existing.check_capacity(newcomer)
            except RoomcastError as exc:
                return _error(429, str(exc))
        token = create_token(
            self._api_key,
            self._api_secret,
            identity=identity,
            name=name,
            video=grant,
            ttl_seconds=JOIN_TOKEN_TTL,
        )
        return web.json_response({"token": token, "url": ws_url(request)}, headers=NO_STORE)

    async def handle_admin_token(self, request: web.Request) -> web.Response:
        """A short-lived API token for the dashboard (dev keys only).

        ``roomAdmin`` is per room in LiveKit, so ``?room=NAME`` adds it for that room; without
        it the token lists, creates and deletes rooms.
        """
        room = request.query.get("room", "")
        if room:
            try:
                validate_room_name(room, self._config.limit)
            except RoomcastError as exc:
                return _error(400, str(exc))
        grant = VideoGrant(room_list=True, room_create=True, room_admin=bool(room), room=room)
        token = create_token(
            self._api_key, self._api_secret, video=grant, ttl_seconds=ADMIN_TOKEN_TTL
        )
        return web.json_response({"token": token}, headers=NO_STORE)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=NO_STORE)
