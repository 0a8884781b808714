"""Signalling relay: a WebSocket on one node, the participant's session on the room's node.

Like livekit-server's ``RelaySignal`` stream (docs/protocol/12-config-cli-multinode.md §12.5), the
relay only pipes SignalRequest and SignalResponse protobufs, in order, plus start and close:

    edge → room node   sig_start {conn, token, query, remote}   then sig_req {conn, data}
    room node → edge   sig_resp {conn, data}                    and sig_close {conn, code}
    edge → room node   sig_end {conn}  (the WebSocket closed)

The edge owns the WebSocket; the room node runs the ordinary Session with a ``RelaySink``.
A SignalRequest larger than any legitimate one (``relayed_request_limit``) is not relayed:
the edge closes the WebSocket with 1009, as for a frame over
``limit.signal_message_size_limit`` (docs/protocol/01-signalling-connection.md §1.5).
If the room's node dies, the edge tells the client to reconnect (LeaveRequest RECONNECT), and
the client's fresh join is placed on a live node. If the edge dies, the room node treats it as
a dropped WebSocket: the session waits for a resume, which may arrive through any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from roomcast.config import LimitConfig
from roomcast.rooms.contracts import SignalSink, leave_response
from roomcast.routing.bus import Message, NodeBus, b64, unb64

log = logging.getLogger(__name__)

CLOSE_MESSAGE_TOO_BIG = 1009  # RFC 6455 §7.4.1
CLOSE_INTERNAL_ERROR = 1011
# Room for everything but metadata in a SignalRequest: SDP of an offer with many tracks, a
# SyncState on resume, a long UpdateSubscription.
REQUEST_SLACK = 256 * 1024


def relayed_request_limit(limits: LimitConfig) -> int:
    """The largest SignalRequest relayed to another node, in bytes.

    The biggest legitimate request is an UpdateParticipantMetadata at the metadata and
    attribute limits; nothing needs more than that plus ``REQUEST_SLACK``. The WebSocket
    already refuses frames over ``signal_message_size_limit`` (0: no limit there).
    """
    needed = limits.max_metadata_size + limits.max_attributes_size + REQUEST_SLACK
    frame = limits.signal_message_size_limit
    return min(needed, frame) if frame > 0 else needed


class RelayedSession(Protocol):
    def handle_request(self, request: rtc.SignalRequest) -> None: ...

    def on_signal_closed(self, sink: SignalSink) -> None: ...


# token, query string parameters, client address, sink → the session (None if refused)
SessionStarter = Callable[[str, dict[str, str], str, SignalSink], Awaitable[Any]]


# -- edge side -------------------------------------------------------------------------------
@dataclass
class _EdgeConnection:
    node_id: str
    sink: SignalSink


class EdgeRelay:
    """WebSockets on this node whose sessions live on other nodes."""

    def __init__(self, bus: NodeBus, max_request_bytes: int) -> None:
        self._bus = bus
        self._max_request_bytes = max_request_bytes
        self._connections: dict[str, _EdgeConnection] = {}
        bus.on("sig_resp", self._on_response)
        bus.on("sig_close", self._on_close)

    def open(
        self, node_id: str, sink: SignalSink, token: str, query: dict[str, str], remote: str
    ) -> str:
        conn_id = secrets.token_hex(8)
        self._connections[conn_id] = _EdgeConnection(node_id, sink)
        self._bus.publish(
            node_id,
            {"t": "sig_start", "conn": conn_id, "token": token, "query": query, "remote": remote},
        )
        return conn_id

    def forward(self, conn_id: str, request: rtc.SignalRequest) -> None:
        connection = self._connections.get(conn_id)
        if connection is None:
            return
        size = request.ByteSize()
        if size > self._max_request_bytes:
            self._bus.count_limit_hit("relay_signal_request_size")
            log.warning(
                "relay: closing a connection that sent a %d-byte %s request (limit %d)",
                size,
                request.WhichOneof("message"),
                self._max_request_bytes,
            )
            connection.sink.close(CLOSE_MESSAGE_TOO_BIG, "signal request too large")
            self.end(conn_id)
            return
        data = b64(request.SerializeToString())
        self._bus.publish(connection.node_id, {"t": "sig_req", "conn": conn_id, "data": data})

    def end(self, conn_id: str) -> None:
        connection = self._connections.pop(conn_id, None)
        if connection is not None:
            self._bus.publish(connection.node_id, {"t": "sig_end", "conn": conn_id})

    def node_dead(self, node_id: str) -> None:
        """The room's node is gone: the client must rejoin, which places the room anew."""
        for conn_id, connection in list(self._connections.items()):
            if connection.node_id == node_id:
                del self._connections[conn_id]
                connection.sink.send(
                    leave_response(models.DisconnectReason.SIGNAL_CLOSE, rtc.LeaveRequest.RECONNECT)
                )
                connection.sink.close()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _on_response(self, message: Message) -> None:
        connection = self._connections.get(str(message.get("conn")))
        if connection is None:
            return
        response = rtc.SignalResponse()
        try:
            response.ParseFromString(unb64(str(message.get("data", ""))))
        except (DecodeError, ValueError):
            log.warning("relay: dropping an undecodable SignalResponse")
            return
        connection.sink.send(response)

    def _on_close(self, message: Message) -> None:
        connection = self._connections.pop(str(message.get("conn")), None)
        if connection is not None:
            code = message.get("code", 1000)
            connection.sink.close(code if isinstance(code, int) else 1000, "")


# -- room side -------------------------------------------------------------------------------
class RelaySink:
    """A SignalSink whose WebSocket is on another node."""

    def __init__(self, bus: NodeBus, edge_id: str, conn_id: str) -> None:
        self._bus = bus
        self.edge_id = edge_id
        self.conn_id = conn_id
        self._closed = False

    def send(self, response: rtc.SignalResponse) -> None:
        if self._closed:
            return
        data = b64(response.SerializeToString())
        message = {"t": "sig_resp", "conn": self.conn_id, "data": data}
        if not self._bus.publish(self.edge_id, message):
            # The client would miss a message and its state would drift: end the connection.
            self.close(CLOSE_INTERNAL_ERROR, "signal response too large to relay")

    def close(self, code: int = 1000, message: str = "") -> None:
        if not self._closed:
            self._closed = True
            self._bus.publish(self.edge_id, {"t": "sig_close", "conn": self.conn_id, "code": code})

    @property
    def closed(self) -> bool:
        return self._closed


@dataclass
class _RoomConnection:
    sink: RelaySink
    inbox: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class RoomRelay:
    """Sessions on this node whose WebSockets are on other nodes."""

    def __init__(self, bus: NodeBus, start_session: SessionStarter) -> None:
        self._bus = bus
        self._start_session = start_session
        self._connections: dict[str, _RoomConnection] = {}
        for kind in ("sig_start", "sig_req", "sig_end"):
            bus.on(kind, self._on_message)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _on_message(self, message: Message) -> None:
        conn_id = str(message.get("conn", ""))
        connection = self._connections.get(conn_id)
        if message.get("t") == "sig_start" and connection is None:
            sink = RelaySink(self._bus, str(message.get("from", "")), conn_id)
            connection = _RoomConnection(sink)
            connection.task = asyncio.get_running_loop().create_task(self._run(conn_id))
            self._connections[conn_id] = connection
        if connection is not None:
            connection.inbox.put_nowait(message)

    def edge_dead(self, node_id: str) -> None:
        for connection in list(self._connections.values()):
            if connection.sink.edge_id == node_id:
                connection.inbox.put_nowait({"t": "sig_end"})

    async def close(self) -> None:
        for connection in list(self._connections.values()):
            if connection.task is not None:
                connection.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connection.task

    async def _run(self, conn_id: str) -> None:
        """Process one relayed connection's messages strictly in order."""
        connection = self._connections[conn_id]
        sink = connection.sink
        session: RelayedSession | None = None
        try:
            while True:
                message = await connection.inbox.get()
                kind = message.get("t")
                if kind == "sig_start":
                    query = message.get("query")
                    session = await self._start_session(
                        str(message.get("token", "")),
                        {str(k): str(v) for k, v in query.items()}
                        if isinstance(query, dict)
                        else {},
                        str(message.get("remote", "")),
                        sink,
                    )
                    if session is None:
                        sink.close()
                        return
                elif kind == "sig_req" and session is not None:
                    request = rtc.SignalRequest()
                    try:
                        request.ParseFromString(unb64(str(message.get("data", ""))))
                    except (DecodeError, ValueError):
                        sink.close(1007, "invalid SignalRequest")
                        return
                    session.handle_request(request)
                elif kind == "sig_end":
                    return
        except Exception:
            log.exception("relayed session failed")
            sink.close(1011, "internal error")
        finally:
            self._connections.pop(conn_id, None)
            if session is not None:
                session.on_signal_closed(sink)
