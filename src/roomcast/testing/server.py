"""`RoomcastServer`: a real Roomcast server for an app's tests, on free loopback ports.

The server runs on its own event loop (uvloop) in a daemon thread of the test process. That is
what makes one server usable from every kind of test at once: async tests on any pytest-asyncio
loop scope (function, module, session), sync tests, and subprocesses (an agent worker, the app
under test) that reach it over the network like any LiveKit server. Starting one takes a few
tens of milliseconds; no second interpreter is spawned.

Everything a test does with the server goes through the network (the official SDKs, the Twirp
API, `/rtc`); the few conveniences that read the server's own state (`wait_for_agent_worker`,
`delete_room`) run on the server's loop through `call`/`acall`, so they are thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from roomcast.auth import VideoGrant, create_token

if TYPE_CHECKING:
    from roomcast.server import Server

T = TypeVar("T")

START_TIMEOUT = 30.0
STOP_GRACE = 10.0  # beyond the server's own shutdown_flush_timeout
BIND_ATTEMPTS = 5  # a free UDP port can be taken between choosing it and binding it
TOKEN_FIELDS = {"name", "metadata", "attributes", "kind", "ttl", "room_config"}
GRANT_FIELDS = {f.name for f in fields(VideoGrant)}
_room_numbers = itertools.count(1)


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class RoomcastServer:
    """A Roomcast server on free loopback ports, for tests and scripts.

    ``with RoomcastServer() as server:`` or ``async with RoomcastServer() as server:`` (the
    async form starts and stops it without blocking the caller's loop). ``config`` is YAML in
    livekit-server's format, merged over the test defaults (``port: 0``, a random API key and
    secret, bound to ``host``)."""

    def __init__(self, config: str = "", *, host: str = "127.0.0.1") -> None:
        self.host = host
        user = yaml.safe_load(config) if config.strip() else {}
        if not isinstance(user, dict):
            raise ValueError("RoomcastServer(config=...) must be a YAML mapping")
        self._user_config: dict[str, Any] = user
        keys = user.get("keys")
        if isinstance(keys, dict) and keys:
            self.api_key, self.api_secret = (str(v) for v in next(iter(keys.items())))
        else:
            self.api_key = "APItest" + secrets.token_hex(4)
            self.api_secret = secrets.token_urlsafe(32)
        self.server: Server | None = None  # the running server; touch it only through call()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- addresses and credentials -----------------------------------------------------------
    @property
    def url(self) -> str:
        """The LiveKit URL an SDK connects to (``ws://host:port``)."""
        return f"ws://{self._netloc}"

    @property
    def http_url(self) -> str:
        """The same server over HTTP, for server SDKs (``livekit-api``) and the Twirp API."""
        return f"http://{self._netloc}"

    @property
    def _netloc(self) -> str:
        self._require_running()
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET, for a subprocess (an agent
        worker, the app under test) that reads them as the LiveKit SDKs and `lk` do."""
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }

    def token(self, identity: str, room: str, **grants: Any) -> str:
        """A join token for ``identity`` in ``room``.

        Keyword arguments are `VideoGrant` fields (``can_publish=False``, ``hidden=True``,
        ``room_admin=True``, ``can_update_own_metadata=True`` …) or token fields: ``name``,
        ``metadata``, ``attributes`` (a dict), ``kind`` ("agent" …), ``ttl`` (seconds) and
        ``room_config`` (a RoomConfiguration as a dict)."""
        token_args = {k: grants.pop(k) for k in list(grants) if k in TOKEN_FIELDS}
        unknown = set(grants) - GRANT_FIELDS
        if unknown:
            raise TypeError(
                f"unknown grant(s) {', '.join(sorted(unknown))}: use VideoGrant fields "
                f"({', '.join(sorted(GRANT_FIELDS))}) or {', '.join(sorted(TOKEN_FIELDS))}"
            )
        grants.setdefault("room_join", True)
        grants.setdefault("room", room)
        return self._mint(identity, VideoGrant(**grants), **token_args)

    def admin_token(self, room: str = "") -> str:
        """A server-API token: roomList and roomCreate, and roomAdmin of ``room`` if given."""
        grant = VideoGrant(room_list=True, room_create=True, room_admin=bool(room), room=room)
        return self._mint("", grant)

    def _mint(
        self,
        identity: str,
        grant: VideoGrant,
        *,
        name: str = "",
        metadata: str = "",
        attributes: dict[str, str] | None = None,
        kind: str = "",
        ttl: float = 3600,
        room_config: dict[str, Any] | None = None,
    ) -> str:
        return create_token(
            self.api_key,
            self.api_secret,
            identity=identity,
            name=name,
            metadata=metadata,
            attributes=attributes,
            video=grant,
            kind=kind,
            ttl_seconds=ttl,
            room_config=room_config,
        )

    @staticmethod
    def new_room(prefix: str = "room") -> str:
        """A room name no other test of this process uses."""
        return f"{prefix}-{next(_room_numbers)}-{secrets.token_hex(3)}"

    # -- conveniences over the SDKs (imported only when used) --------------------------------
    def api(self) -> Any:
        """A `livekit.api.LiveKitAPI` for this server: ``async with server.api() as lkapi:``.
        Create it inside the test's event loop (it opens an aiohttp session)."""
        from livekit import api

        return api.LiveKitAPI(self.http_url, self.api_key, self.api_secret)

    @contextlib.asynccontextmanager
    async def connect(
        self, identity: str, room: str, *, options: Any = None, **grants: Any
    ) -> AsyncIterator[Any]:
        """A connected `livekit.rtc.Room` as ``identity`` (disconnected at the end):
        ``async with server.connect("alice", room) as alice:``. ``grants`` as for `token`."""
        from livekit import rtc

        client = rtc.Room()
        await client.connect(
            self.url, self.token(identity, room, **grants), options or rtc.RoomOptions()
        )
        try:
            yield client
        finally:
            if client.isconnected():
                await client.disconnect()

    # -- the server's own state, on its loop -------------------------------------------------
    def call(self, function: Callable[[Server], T]) -> T:
        """Run ``function(server)`` on the server's loop and return its result (blocking)."""
        loop, server = self._running()
        if threading.current_thread() is self._thread:
            return function(server)

        async def run() -> T:
            return function(server)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(START_TIMEOUT)

    async def acall(self, function: Callable[[Server], T]) -> T:
        """`call` for async code: awaits the answer without blocking the caller's loop."""
        loop, server = self._running()

        async def run() -> T:
            return function(server)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))

    def delete_room(self, name: str) -> bool:
        """Close ``name`` (participants get ROOM_DELETED) if it exists; True if it did."""

        def delete(server: Server) -> bool:
            if server.rooms.get(name) is None:
                return False
            server.rooms.delete(name)
            return True

        return self.call(delete)

    async def wait_for_agent_worker(self, agent_name: str = "", timeout: float = 60.0) -> None:
        """Until a livekit-agents worker registered for ``agent_name`` ("" = automatic
        dispatch) is connected to this server. Checks every 20 ms: registration has no event
        a test could await."""

        def registered(server: Server) -> bool:
            return any(w.agent_name == agent_name for w in server.agents.workers())

        async with asyncio.timeout(timeout):
            while not await self.acall(registered):  # noqa: ASYNC110 (no event to await)
                await asyncio.sleep(0.02)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> RoomcastServer:
        """Start the server thread; returns once every port is bound (or raises why not)."""
        if self._thread is not None:
            raise RuntimeError("this RoomcastServer was already started")
        self._thread = threading.Thread(target=self._run, name="roomcast-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"Roomcast did not start within {START_TIMEOUT:.0f} s")
        if self._error is not None:
            self._thread.join(STOP_GRACE)
            raise self._error
        return self

    def stop(self) -> None:
        """Stop the server (rooms closed, participants told SERVER_SHUTDOWN) and its thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(stop.set)
        flush = self.server.config.shutdown_flush_timeout if self.server is not None else 0
        thread.join(flush + STOP_GRACE)

    def __enter__(self) -> RoomcastServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> RoomcastServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _running(self) -> tuple[asyncio.AbstractEventLoop, Server]:
        self._require_running()
        assert self._loop is not None and self.server is not None
        return self._loop, self.server

    def _require_running(self) -> None:
        if self.server is None or self.port == 0:
            raise RuntimeError("the Roomcast server is not running: start() it first")

    def _run(self) -> None:
        try:
            import uvloop

            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        except ImportError:  # uvloop is a dependency; plain asyncio works as well
            factory = asyncio.new_event_loop
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            if not self._ready.is_set():
                self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from roomcast.edge.ports import BindError

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for attempt in range(BIND_ATTEMPTS):
            server = self._new_server()
            try:
                await server.start()
                break
            except BindError:
                if attempt == BIND_ATTEMPTS - 1 or "udp_port" in self._user_config.get("rtc", {}):
                    raise
        self.server, self.port = server, server.port
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            try:
                await server.stop()
            finally:
                self.server, self.port = None, 0

    def _new_server(self) -> Server:
        from roomcast.config import Overrides, load_config
        from roomcast.server import Server

        defaults: dict[str, Any] = {
            "port": 0,
            "bind_addresses": [self.host],
            "keys": {self.api_key: self.api_secret},
            "rtc": {"udp_port": _free_udp_port(self.host), "tcp_port": 0},
        }
        body = yaml.safe_dump(_merge(defaults, self._user_config))
        # environ={}: the developer's LIVEKIT_* variables must not leak into the tests.
        return Server(load_config(Overrides(config_body=body), environ={}))
