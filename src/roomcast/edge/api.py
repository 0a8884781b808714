"""The Twirp endpoint: ``POST /twirp/livekit.<Service>/<Method>``
(docs/protocol/08-server-api.md §8.1)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping

from aiohttp import web
from google.protobuf.message import Message
from livekit.protocol import room as room_pb

from roomcast.auth import AuthError, Claims, TokenVerifier, VideoGrant
from roomcast.edge import twirp
from roomcast.edge.client_address import client_address
from roomcast.edge.offload import decode_off_loop
from roomcast.edge.roomservice import METHODS, Method
from roomcast.errors import PermissionDeniedError, RoomcastError
from roomcast.rooms.admin import RoomAdmin
from roomcast.routing.router import API_TIMEOUT, ApiResult, Router, RoutingUnavailable
from roomcast.telemetry import Metrics

log = logging.getLogger(__name__)

ROOM_SERVICE = "livekit.RoomService"
RPC_ROUTING_SLACK = 10.0  # seconds beyond a routed PerformRpc's response timeout (ack, relay)
BODY_READ_TIMEOUT = 30.0  # seconds to receive a request body once its head has arrived


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.query.get("access_token", "")


def unauthenticated(error: AuthError) -> twirp.TwirpError:
    """A refused token (bad signature, unknown key, expired…) as Twirp's ``unauthenticated``."""
    return twirp.TwirpError("unauthenticated", str(error))


def _body_of(response: web.Response) -> bytes:
    return response.body if isinstance(response.body, bytes) else b""


def holds_api_grant(video: VideoGrant) -> bool:
    """Whether a token could pass some Twirp method's grant check: every method needs
    roomCreate, roomList or roomAdmin of a named room (docs/protocol/08-server-api.md), and
    the egress and ingress services of LiveKit roomRecord or ingressAdmin. A join token has
    none of them, so its calls are refused before their body is read."""
    return (
        video.room_create
        or video.room_list
        or video.is_admin_of(video.room)
        or video.room_record
        or video.ingress_admin
    )


class TwirpEndpoint:
    def __init__(
        self,
        verifier: TokenVerifier,
        admin: RoomAdmin,
        metrics: Metrics,
        services: Mapping[str, Mapping[str, Method]] | None = None,
        router: Router | None = None,
        max_body_size: int = 0,
    ) -> None:
        self._verifier = verifier
        self._max_body_size = max_body_size  # the app's client_max_size enforces it on read
        self._router = router
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
        # Authentication and the grant check come before the body is read and decoded, so a
        # caller without an API grant costs nothing whatever it sends.
        claims = self._admit(request)
        if isinstance(claims, web.Response):
            return claims
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        message = method.request_type()
        try:
            await decode_off_loop(
                len(body), functools.partial(twirp.decode, body, content_type, message)
            )
        except twirp.TwirpError as exc:
            return exc.to_response()
        if self._router is not None:
            token = bearer_token(request)
            routed = await self._route(
                service, method_name, method, message, content_type, body, token, claims
            )
            if routed is not None:
                return routed
        return await self._execute(service, method_name, method, message, content_type, claims)

    def _admit(self, request: web.Request) -> Claims | web.Response:
        """The claims of a caller whose body may be read, or the refusal: a body declared too
        large (413), a bad token, no token, or one without any API grant such as a join token
        (401 ``unauthenticated``). Every refusal is a Twirp JSON error, so the server SDKs show
        its message (livekit-server answers a bad token in plain text, which they show as an
        empty ``unknown`` error)."""
        declared = request.content_length
        if self._max_body_size and declared is not None and declared > self._max_body_size:
            # Refused on its declared size before anything is read, as LiveKit does.
            self._metrics.limit_hit("max_api_request_body_size", client_address(request))
            return self._too_large().to_response()
        token = bearer_token(request)
        if not token:
            header = request.headers.get("Authorization")
            problem = (
                "invalid authorization header: it must start with Bearer"
                if header and header.split(" ", 1)[0].lower() != "bearer"
                else "permissions denied: no authorization token"
            )
            return twirp.TwirpError("unauthenticated", problem).to_response()
        try:
            claims = self._verifier.verify(token)
        except AuthError as exc:
            return unauthenticated(exc).to_response()
        if not holds_api_grant(claims.video):
            return twirp.TwirpError.from_domain(PermissionDeniedError()).to_response()
        return claims

    def _too_large(self) -> twirp.TwirpError:
        return twirp.TwirpError(
            "resource_exhausted",
            f"request body too large (limit.max_api_request_body_size: {self._max_body_size} "
            "bytes)",
            status=413,
        )

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT):
                return await request.read()
        except TimeoutError:
            self._metrics.limit_hit("api_body_read_timeout", client_address(request))
            response = twirp.TwirpError("deadline_exceeded", "request body too slow").to_response()
            response.force_close()
            return response
        except web.HTTPRequestEntityTooLarge:  # no Content-Length, or a wrong one
            self._metrics.limit_hit("max_api_request_body_size", client_address(request))
            response = self._too_large().to_response()
            response.force_close()
            return response

    async def execute_local(
        self, service: str, method_name: str, content_type: str, body: bytes, token: str
    ) -> ApiResult:
        """Run a call on this node (for another node that routed it here)."""
        method = self._services.get(service, {}).get(method_name)
        if method is None:
            response = twirp.TwirpError("bad_route", f"no handler for {method_name}").to_response()
        else:
            try:
                claims = self._verifier.verify(token)
            except AuthError as exc:
                response = unauthenticated(exc).to_response()
                return ApiResult(response.status, twirp.JSON, _body_of(response))
            message = method.request_type()
            try:
                await decode_off_loop(
                    len(body), functools.partial(twirp.decode, body, content_type, message)
                )
            except twirp.TwirpError as exc:
                response = exc.to_response()
            else:
                response = await self._execute(
                    service, method_name, method, message, content_type, claims
                )
        return ApiResult(response.status, response.content_type, _body_of(response))

    async def _execute(
        self,
        service: str,
        method_name: str,
        method: Method,
        message: Message,
        content_type: str,
        claims: Claims,
    ) -> web.Response:
        try:
            response = await method.handler(self._admin, claims, message)
        except twirp.TwirpError as exc:
            return exc.to_response()
        except RoomcastError as exc:
            return twirp.TwirpError.from_domain(exc).to_response()
        except Exception:
            log.exception("%s.%s failed", service, method_name)
            return twirp.TwirpError("internal", "internal error").to_response()
        return twirp.encode(response, content_type)

    async def _route(
        self,
        service: str,
        method_name: str,
        method: Method,
        message: Message,
        content_type: str,
        body: bytes,
        token: str,
        claims: Claims,
    ) -> web.Response | None:
        """Run the call on the node hosting its room; None to run it here
        (docs/protocol/12-config-cli-multinode.md §12.5)."""
        assert self._router is not None
        try:
            if method_name == "ListRooms" and service == ROOM_SERVICE:
                return await self._list_everywhere(
                    method, message, content_type, body, token, claims
                )
            room = str(getattr(message, "room", "") or "")
            if method_name == "CreateRoom" and service == ROOM_SERVICE:
                room = str(getattr(message, "name", ""))
            if not room:
                return None
            node = await self._router.room_node(room)
            if node is None and method_name == "CreateRoom" and claims.video.room_create:
                node = await self._router.place(room)
            if node is None or node == self._router.node_id:
                return None
            timeout = API_TIMEOUT
            if method_name == "PerformRpc":  # waits for the participant's answer
                response_ms = int(getattr(message, "response_timeout_ms", 0)) or 10_000
                timeout = max(timeout, response_ms / 1000 + RPC_ROUTING_SLACK)
            result = await self._router.call_api(
                node, service, method_name, content_type, body, token, timeout
            )
        except RoutingUnavailable as exc:
            return twirp.TwirpError("unavailable", str(exc)).to_response()
        return web.Response(
            status=result.status, body=result.body, headers={"Content-Type": result.content_type}
        )

    async def _list_everywhere(
        self,
        method: Method,
        message: Message,
        content_type: str,
        body: bytes,
        token: str,
        claims: Claims,
    ) -> web.Response:
        """ListRooms merges every live node's rooms."""
        assert self._router is not None
        local = await self._execute(
            ROOM_SERVICE, "ListRooms", method, message, content_type, claims
        )
        if local.status != 200 or not isinstance(local.body, bytes):
            return local
        merged = room_pb.ListRoomsResponse()
        twirp.decode(local.body, content_type, merged)
        seen = {room.name for room in merged.rooms}
        silent: set[str] = set()
        for node_id, result in await self._router.gather_api(
            ROOM_SERVICE, "ListRooms", content_type, body, token
        ):
            if result is None:
                silent.add(node_id)
                continue
            if result.status != 200:
                continue
            remote = room_pb.ListRoomsResponse()
            try:
                twirp.decode(result.body, content_type, remote)
            except twirp.TwirpError:
                continue
            for room in remote.rooms:
                if room.name not in seen:
                    seen.add(room.name)
                    merged.rooms.append(room)
        if silent:  # a node too busy to answer: its rooms as last recorded in Redis
            wanted = set(getattr(message, "names", ()))
            for room in await self._router.records.rooms_of(silent):
                if room.name not in seen and (not wanted or room.name in wanted):
                    seen.add(room.name)
                    merged.rooms.append(room)
        return twirp.encode(merged, content_type)
