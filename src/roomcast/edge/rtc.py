"""Signalling endpoints: ``/rtc`` (two PeerConnections), ``/rtc/v1`` (one PeerConnection, the
SDKs' default: docs/protocol/19-signalling-v1.md) and their ``…/validate``.

Everything is validated before the WebSocket upgrade and errors are plain HTTP statuses, which
SDKs re-fetch through ``…/validate`` (docs/protocol/01-signalling-connection.md §1.1-1.2) and
show: a bad token, a missing room, and a full room (``room.max_participants``, or the room's own
``max_participants``; asked of the room's node in multi-node mode). livekit-server admits a
newcomer to a full room as far as the upgrade and then sends ``LeaveRequest{JOIN_FAILURE}``,
which SDKs report as "transport closed" or a bare leave; Roomcast refuses it before the upgrade
with HTTP 403 and livekit-server's wording instead: for a 403 the Python SDK shows the text and
does not retry, and livekit-client shows it (for a 429 the first retries three times and the
second drops the text). A room that fills between this check and the join still gets the
JOIN_FAILURE leave (rooms/session_manager.py).

``/rtc/v1`` takes the client's options as one ``join_request`` parameter (edge/join_request.py)
instead of the query string, decoded only after the token has been checked; it is refused with
400 when it cannot be read, and counts towards the refused joins of the address as a bad token
does. Everything else (limits, rate limits, the room-full refusal, the relay to the room's node)
is the same on both paths. ``requests_by_path`` counts the signalling requests each path got.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from roomcast.auth import AuthError, Claims, TokenVerifier
from roomcast.edge.api import bearer_token
from roomcast.edge.client_address import client_address, limit_key
from roomcast.edge.http import CORS_HEADERS
from roomcast.edge.join_request import (
    JoinRequestError,
    claims_with_join_request,
    decode_join_request,
    join_options_from_request,
)
from roomcast.edge.offload import decode_off_loop
from roomcast.edge.rate_limit import RateLimiter
from roomcast.edge.signal_sink import WebSocketSignalSink
from roomcast.edge.twirp import http_status_for
from roomcast.errors import RoomcastError, RoomFullError
from roomcast.rooms.contracts import JoinOptions, SignalSink
from roomcast.rooms.participant import Participant
from roomcast.rooms.session_manager import SessionManager
from roomcast.routing.router import Router, RoutingUnavailable
from roomcast.telemetry import Metrics

log = logging.getLogger(__name__)

# Values (array elements, object members) in one JSON signalling frame: a subscription to
# thousands of tracks fits many times over (parse_json_request).
MAX_JSON_VALUES = 20_000

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_PAYLOAD = 1007
# WebSocket PINGs, as livekit-server (docs/protocol/01-signalling-connection.md §1.1)
WS_HEARTBEAT = 10.0
# A full room: refused before the upgrade (see the module docstring), in livekit-server's words.
ROOM_FULL_STATUS = 403
ROOM_FULL_TEXT = "room has exceeded its max participants"


def capacity_refusal(sessions: SessionManager, claims: Claims) -> str | None:
    """Why this node's copy of the token's room cannot take the newcomer, or None (no such
    room here, or a free seat: the same rule as the join, rooms/room.py ``check_capacity``)."""
    room = sessions.rooms.get(claims.video.room)
    if room is None:
        return None
    try:
        room.check_capacity(Participant.from_claims(claims))
    except RoomFullError as exc:
        return f"{ROOM_FULL_TEXT} ({exc.max_participants})"
    return None


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value in ("1", "true")


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def join_options(request: web.Request) -> JoinOptions:
    return join_options_from(request.query, client_address(request))


def join_options_from(q: Mapping[str, str], remote: str) -> JoinOptions:
    """Client options from the v0 query string (docs/protocol/01-signalling-connection.md §1.3)."""
    sdk_name = q.get("sdk", "").upper().replace("REACTNATIVE", "REACT_NATIVE")
    sdk = models.ClientInfo.SDK.Value(sdk_name) if sdk_name in models.ClientInfo.SDK.keys() else 0
    capabilities = []
    for name in q.get("capabilities", "").split(","):
        if name in models.ClientInfo.Capability.keys():
            capabilities.append(models.ClientInfo.Capability.Value(name))
    info = models.ClientInfo(
        sdk=sdk,  # type: ignore[arg-type]
        version=q.get("version", ""),
        protocol=_int(q.get("protocol")),
        os=q.get("os", ""),
        os_version=q.get("os_version", ""),
        device_model=q.get("device_model", ""),
        browser=q.get("browser", ""),
        browser_version=q.get("browser_version", ""),
        address=remote,
        network=q.get("network", ""),
        client_protocol=_int(q.get("client_protocol")),
        capabilities=capabilities,  # type: ignore[arg-type]
    )
    return JoinOptions(
        client_info=info,
        auto_subscribe=_flag(q.get("auto_subscribe"), True),
        adaptive_stream=_flag(q.get("adaptive_stream"), False),
        subscriber_allow_pause=(
            None if "subscriber_allow_pause" not in q else _flag(q["subscriber_allow_pause"], False)
        ),
        reconnect=_flag(q.get("reconnect"), False),
        reconnect_sid=q.get("sid", ""),
    )


@dataclass(frozen=True)
class Admission:
    """A join that passed the checks before the upgrade."""

    claims: Claims
    node: str | None  # the room's node in multi-node mode; None: single node, or nowhere yet
    join_request: rtc.JoinRequest | None = None  # `/rtc/v1`


class TooManyJsonValues(ValueError):
    """A JSON signalling frame with more than MAX_JSON_VALUES values."""


def json_values_over(value: object, limit: int) -> bool:
    """Whether ``value`` holds more than ``limit`` array elements and object members; stops
    as soon as it knows, without visiting the elements of a list that is too long."""
    count, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            count += len(item)
            children: Any = item.values()
        elif isinstance(item, list):
            count += len(item)
            children = item
        else:
            continue
        if count > limit:
            return True
        pending.extend(child for child in children if isinstance(child, (dict, list)))
    return False


def parse_json_request(text: str) -> rtc.SignalRequest:
    """A SignalRequest from a JSON text frame (docs/protocol/01-signalling-connection.md §1.5).

    protobuf's JSON parser costs ~1.2 µs of Python per value, holding the interpreter: a 2 MiB
    frame of 500,000 one-letter track sids took 0.6 s, and on the decoding thread (offload.py)
    it still delayed every request of the node by 100-300 ms, the event loop waiting its turn
    for the interpreter (bench/hostile). Frames of more than MAX_JSON_VALUES values are
    refused after the C JSON decoder has counted them (8 ms for that frame)."""
    if json_values_over(json.loads(text), MAX_JSON_VALUES):
        raise TooManyJsonValues(f"more than {MAX_JSON_VALUES} JSON values")
    request = rtc.SignalRequest()
    json_format.Parse(text, request, ignore_unknown_fields=True)
    return request


class RtcEndpoint:
    def __init__(
        self,
        verifier: TokenVerifier,
        sessions: SessionManager,
        metrics: Metrics,
        max_frame: int,
        router: Router | None = None,
    ) -> None:
        self._verifier = verifier
        self._sessions = sessions
        self._metrics = metrics
        self._router = router
        self._max_frame = max_frame
        self._sinks: set[WebSocketSignalSink] = set()
        self.requests_by_path: Counter[str] = Counter()  # signalling requests, by path
        limits = sessions.config.limit
        self._queue_bytes = limits.signal_queue_bytes
        # Refused joins count per client address, accepted ones per identity: a flood of bad
        # tokens from behind a shared NAT or proxy never locks out valid joins.
        self._failed_joins = RateLimiter(limits.joins_per_second_per_ip, limits.join_burst_per_ip)
        self._joins = RateLimiter(
            limits.joins_per_second_per_identity, limits.join_burst_per_identity
        )

    @property
    def open_connections(self) -> int:
        """Signalling WebSockets open on this node."""
        return len(self._sinks)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/rtc", self.handle_rtc)
        app.router.add_get("/rtc/validate", self.handle_validate)
        app.router.add_get("/rtc/v1", self.handle_v1)
        app.router.add_get("/rtc/v1/validate", self.handle_v1_validate)

    async def _check(
        self, request: web.Request, joining: bool = False, v1: bool = False
    ) -> web.Response | Admission:
        """Validate the join: an error response, or what was admitted."""
        header = request.headers.get("Authorization")
        if header is not None and header[:7].lower() != "bearer ":
            return web.Response(
                status=401, text="invalid authorization header. Must start with Bearer "
            )
        try:
            claims = self._verifier.verify(bearer_token(request))
        except AuthError as exc:
            if not bearer_token(request):
                return web.Response(status=401, text="permissions denied")
            return web.Response(status=401, text=f"invalid authorization token: {exc}")
        join_request: rtc.JoinRequest | None = None
        if v1:
            refusal = self._read_join_request(request.query.get("join_request", ""), claims)
            if isinstance(refusal, web.Response):
                return refusal
            claims, join_request = refusal
        node: str | None = None
        room_exists: bool | None = None
        if self._router is not None and claims.video.room:
            try:
                node = await self._router.room_node(claims.video.room)
            except RoutingUnavailable as exc:
                return web.Response(status=503, text=str(exc))
            room_exists = node is not None
        try:
            self._sessions.validate_join(claims, room_exists=room_exists)
        except RoomcastError as exc:
            return web.Response(status=http_status_for(exc), text=str(exc))
        full = await self._room_full(claims, node, bearer_token(request))
        if full is not None:
            if joining:  # logged once per join, not again for the SDK's validate request
                who = {"room": claims.video.room, "identity": claims.identity}
                log.info("join refused before the upgrade: %s", full, extra=who)
            return web.Response(status=ROOM_FULL_STATUS, text=full)
        return Admission(claims, node, join_request)

    def _read_join_request(
        self, param: str, claims: Claims
    ) -> web.Response | tuple[Claims, rtc.JoinRequest]:
        """`/rtc/v1`'s join request and the claims it amends, or the refusal."""
        if not param:
            return web.Response(status=400, text="join_request is required")
        try:
            join_request = decode_join_request(param)
            claims = claims_with_join_request(claims, join_request)
        except JoinRequestError as exc:
            return web.Response(status=400, text=str(exc))
        except RoomcastError as exc:
            return web.Response(status=http_status_for(exc), text=str(exc))
        return claims, join_request

    async def _room_full(self, claims: Claims, node: str | None, token: str) -> str | None:
        """The room-full refusal, from this node's rooms or the room's node."""
        if self._router is None or node == self._router.node_id:
            return capacity_refusal(self._sessions, claims)
        if node is None:
            return None  # not hosted anywhere yet: empty
        return await self._router.join_refusal(node, token)

    async def answer_join_check(self, request: Mapping[str, Any]) -> dict[str, str]:
        """Another node's edge asks whether a join to a room hosted here would be refused."""
        try:
            claims = self._verifier.verify(str(request.get("token", "")))
        except AuthError:
            return {}  # that edge verified it; a token expiring meanwhile is the join's business
        refusal = capacity_refusal(self._sessions, claims)
        return {"refusal": refusal} if refusal else {}

    async def handle_validate(self, request: web.Request) -> web.Response:
        return await self._validate(request, v1=False)

    async def handle_v1_validate(self, request: web.Request) -> web.Response:
        return await self._validate(request, v1=True)

    async def _validate(self, request: web.Request, *, v1: bool) -> web.Response:
        checked = await self._check(request, v1=v1)
        if isinstance(checked, web.Response):
            checked.headers.update(CORS_HEADERS)
            return checked
        return web.Response(text="success", headers=CORS_HEADERS)

    async def handle_rtc(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, v1=False)

    async def handle_v1(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, v1=True)

    async def _serve(self, request: web.Request, *, v1: bool) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=404)
        self.requests_by_path[request.path] += 1
        checked = await self._check(request, joining=True, v1=v1)
        if isinstance(checked, web.Response):
            if checked.status in (400, 401):
                client = client_address(request)
                if not self._failed_joins.allow(limit_key(client)):
                    self._metrics.limit_hit("failed_joins_per_ip", limit_key(client))
                    self._metrics.signal_connections.labels("rate_limited").inc()
                    return web.Response(
                        status=429, text="too many refused join attempts from this address"
                    )
            self._metrics.signal_connections.labels("rejected").inc()
            return checked
        claims, node, join_request = checked.claims, checked.node, checked.join_request
        who = f"{claims.identity}@{claims.video.room}"
        # (tests/integration/cluster.py reads this line from the logs of `roomcast serve` nodes)
        log.debug("signalling on %s", request.path, extra={"identity": claims.identity})
        if not self._joins.allow(f"{claims.api_key}\n{claims.video.room}\n{claims.identity}"):
            self._metrics.limit_hit("joins_per_identity", who)
            self._metrics.signal_connections.labels("rate_limited").inc()
            return web.Response(status=429, text="too many joins for this identity")
        if join_request is not None:
            options = join_options_from_request(join_request, client_address(request))
        else:
            options = join_options(request)
        if self._router is not None and node is None and not options.reconnect:
            try:
                node = await self._router.place(claims.video.room)
            except RoutingUnavailable as exc:
                return web.Response(status=503, text=str(exc))
        self._metrics.signal_connections.labels("accepted").inc()
        ws = web.WebSocketResponse(
            heartbeat=WS_HEARTBEAT, max_msg_size=self._max_frame, autoping=True
        )
        await ws.prepare(request)
        connection = self._sink(request, ws, who)
        self._sinks.add(connection)
        if self._router is not None and node is not None and node != self._router.node_id:
            try:
                await self._relay(request, ws, connection, node)
            finally:
                self._sinks.discard(connection)
                await connection.drain_and_close()
            return ws
        session = None
        try:
            session = await self._sessions.connect(
                claims, options, connection, join_request=join_request
            )
            if session is not None:
                await self._read_loop(ws, connection, session.handle_request)
        finally:
            self._sinks.discard(connection)
            await connection.drain_and_close()
            if session is not None:
                session.on_signal_closed(connection)
        return ws

    def _sink(
        self, request: web.Request, ws: web.WebSocketResponse, who: str
    ) -> WebSocketSignalSink:
        def overflow(size: int) -> None:
            self._metrics.limit_hit(
                "signal_queue_bytes", who, f"{size} bytes queued, client not reading"
            )

        def abort() -> None:
            if request.transport is not None:
                request.transport.abort()

        return WebSocketSignalSink(ws, self._queue_bytes, overflow, abort)

    async def _relay(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        sink: WebSocketSignalSink,
        node: str,
    ) -> None:
        """This WebSocket's session lives on ``node``: pipe signalling both ways over Redis."""
        assert self._router is not None
        edge = self._router.edge
        conn_id = edge.open(
            node, sink, bearer_token(request), dict(request.query), client_address(request)
        )
        try:
            await self._read_loop(ws, sink, lambda req: edge.forward(conn_id, req))
        finally:
            edge.end(conn_id)

    async def start_relayed(
        self, token: str, query: dict[str, str], remote: str, sink: SignalSink
    ) -> Any:
        """A session whose WebSocket is on another node (the edge validated it already). A
        `/rtc/v1` join carries its join request in the query, as the client sent it."""
        join_request: rtc.JoinRequest | None = None
        try:
            claims = self._verifier.verify(token)
            if "join_request" in query:
                join_request = decode_join_request(query["join_request"])
                claims = claims_with_join_request(claims, join_request)
            self._sessions.validate_join(claims)
        except (AuthError, RoomcastError, JoinRequestError) as exc:
            log.warning("relayed join refused: %s", exc)
            return None
        if join_request is not None:
            options = join_options_from_request(join_request, remote)
        else:
            options = join_options_from(query, remote)
        return await self._sessions.connect(claims, options, sink, join_request=join_request)

    async def _read_loop(
        self, ws: web.WebSocketResponse, sink: WebSocketSignalSink, handle: object
    ) -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                request = rtc.SignalRequest()
                try:
                    request.ParseFromString(message.data)
                except (DecodeError, RuntimeError) as exc:
                    sink.close(CLOSE_INVALID_PAYLOAD, f"invalid SignalRequest: {exc}")
                    return
                sink.json_mode = False
            elif message.type == WSMsgType.TEXT:
                try:
                    request = await decode_off_loop(
                        len(message.data), functools.partial(parse_json_request, message.data)
                    )
                except (json_format.ParseError, ValueError, RecursionError) as exc:
                    if isinstance(exc, TooManyJsonValues):
                        self._metrics.count_limit_hit("signal_json_values")
                    sink.close(CLOSE_INVALID_PAYLOAD, f"invalid SignalRequest JSON: {exc}")
                    return
                # JSON until the next binary frame (docs/protocol/01-signalling-connection.md §1.5)
                sink.json_mode = True
            elif message.type == WSMsgType.ERROR:
                log.debug("websocket error: %s", ws.exception())
                return
            else:
                continue
            try:
                handle(request)  # type: ignore[operator]
            except Exception:
                log.exception("signal request failed")
                sink.close(1011, "internal error")
                return

    async def close_all(self) -> None:
        """Flush what is queued (the SERVER_SHUTDOWN leaves), then close every WebSocket."""
        sinks = list(self._sinks)
        await asyncio.gather(*(sink.drain_and_close(timeout=1.0) for sink in sinks))
