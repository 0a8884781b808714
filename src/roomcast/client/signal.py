"""A LiveKit signalling client: the `/rtc` or `/rtc/v1` WebSocket with livekit-protocol messages.

Flow (docs/protocol/01-signalling-connection.md, docs/protocol/02-join-and-transports.md,
docs/protocol/07-reconnect-ping-leave.md): connect with the token in the query → the first message
is the JoinResponse → ping_req every `ping_interval` (answered by pong_resp) → offers, answers and
trickles for both PeerConnections → leave. Responses are dispatched to callbacks; requests that
expect a specific response (`add_track`) return a future.

With a `JoinRequest` (`connect(join_request=…)`) the client joins `/rtc/v1` instead
(docs/protocol/19-signalling-v1.md): the request, gzip-compressed as the SDKs send it, carries
the options, the AddTrackRequests (`expect_published` gives their futures) and the first offer
of the one PeerConnection; the server answers it after the JoinResponse and asks for more
receive sections with `MediaSectionsRequirement` (`on_media_sections`).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import time
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from livekit.protocol import models
from livekit.protocol import rtc as proto

from roomcast import __version__
from roomcast.media.jsep import candidate_init, parse_candidate_init
from roomcast.media.sdp import SdpError

log = logging.getLogger(__name__)

PROTOCOL = 16  # what Roomcast implements; LiveKit servers accept any version ≥ 1
PUBLISHER = proto.SignalTarget.PUBLISHER
SUBSCRIBER = proto.SignalTarget.SUBSCRIBER


class SignalError(Exception):
    """Connecting or joining failed; the message says why (HTTP status and body, leave)."""


SDK_VERSION = f"roomcast-loadtest-{__version__}"  # with sdk "python", the closest ClientInfo.SDK


def rtc_url(
    url: str,
    token: str,
    *,
    auto_subscribe: bool,
    adaptive_stream: bool,
    join_request: proto.JoinRequest | None = None,
) -> str:
    """`ws(s)://host/rtc?access_token=…` from a LiveKit URL (http(s) or ws(s), any path), or
    `…/rtc/v1?access_token=…&join_request=…` with a JoinRequest (which carries the options)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    path = parts.path.rstrip("/") + "/rtc"
    if join_request is not None:
        params = {"access_token": token, "join_request": wrap_join_request(join_request)}
        return urlunsplit((scheme, parts.netloc, path + "/v1", urlencode(params), ""))
    query = urlencode(
        {
            "access_token": token,
            "protocol": PROTOCOL,
            "auto_subscribe": int(auto_subscribe),
            "adaptive_stream": int(adaptive_stream),
            "sdk": "python",
            "version": SDK_VERSION,
        }
    )
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def join_request(
    *,
    auto_subscribe: bool,
    adaptive_stream: bool,
    add_tracks: list[proto.AddTrackRequest] | None = None,
    offer: proto.SessionDescription | None = None,
) -> proto.JoinRequest:
    """A `/rtc/v1` JoinRequest with what `rtc_url` puts in the `/rtc` query string."""
    request = proto.JoinRequest(
        client_info=models.ClientInfo(
            sdk=models.ClientInfo.SDK.PYTHON, version=SDK_VERSION, protocol=PROTOCOL
        ),
        connection_settings=proto.ConnectionSettings(
            auto_subscribe=auto_subscribe, adaptive_stream=adaptive_stream
        ),
        add_track_requests=add_tracks or [],
    )
    if offer is not None:
        request.publisher_offer.CopyFrom(offer)
    return request


def wrap_join_request(request: proto.JoinRequest) -> str:
    """`join_request`'s value: a gzip-compressed WrappedJoinRequest, base64url (as the SDKs)."""
    wrapped = proto.WrappedJoinRequest(
        compression=proto.WrappedJoinRequest.GZIP,
        join_request=gzip.compress(request.SerializeToString()),
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


class SignalClient:
    """One participant's signalling connection. Callbacks run on the event loop, in order."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._published: dict[str, asyncio.Future[models.TrackInfo]] = {}
        self.join: proto.JoinResponse | None = None
        self.rtt_ms: float | None = None
        self.closed = asyncio.Event()
        self.leave_reason: str | None = None
        self.on_offer: Callable[[proto.SessionDescription], None] | None = None
        self.on_answer: Callable[[proto.SessionDescription], None] | None = None
        self.on_trickle: Callable[[str, int], None] | None = None  # candidate, target
        self.on_update: Callable[[proto.ParticipantUpdate], None] | None = None
        # /rtc/v1: the server asks for (audio, video) more receive sections and another offer
        self.on_media_sections: Callable[[int, int], None] | None = None
        self.on_message: Callable[[proto.SignalResponse], None] | None = None  # everything else

    async def connect(
        self,
        url: str,
        token: str,
        *,
        auto_subscribe: bool = True,
        adaptive_stream: bool = False,
        timeout: float = 15.0,
        join_request: proto.JoinRequest | None = None,
    ) -> proto.JoinResponse:
        """Join on `/rtc`, or on `/rtc/v1` with a `join_request` (then its own options count)."""
        target = rtc_url(
            url,
            token,
            auto_subscribe=auto_subscribe,
            adaptive_stream=adaptive_stream,
            join_request=join_request,
        )
        try:
            self._ws = await self._session.ws_connect(
                target, timeout=aiohttp.ClientWSTimeout(ws_close=timeout), autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise SignalError(f"join refused: HTTP {exc.status} {exc.message}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SignalError(f"cannot connect to {url}: {exc}") from None
        first = await asyncio.wait_for(self._receive(), timeout)
        if first is None or first.WhichOneof("message") != "join":
            kind = "closed" if first is None else first.WhichOneof("message")
            await self.close()
            raise SignalError(f"expected a JoinResponse first, got {kind}")
        self.join = first.join
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        if first.join.ping_interval > 0:
            self._pinger = loop.create_task(self._ping(first.join.ping_interval))
        return first.join

    # -- requests ----------------------------------------------------------------------------
    def send(self, request: proto.SignalRequest) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        # send_bytes only queues on the transport; the returned coroutine just drains.
        task = asyncio.ensure_future(ws.send_bytes(request.SerializeToString()))
        task.add_done_callback(_ignore_result)

    def add_track(self, request: proto.AddTrackRequest) -> asyncio.Future[models.TrackInfo]:
        """Send AddTrackRequest; the future resolves with the TrackInfo of
        TrackPublishedResponse (docs/protocol/03-publishing.md §3.1 step 3)."""
        future = self.expect_published(request.cid)
        self.send(proto.SignalRequest(add_track=request))
        return future

    def expect_published(self, cid: str) -> asyncio.Future[models.TrackInfo]:
        """The future of an AddTrackRequest sent another way (in a `/rtc/v1` JoinRequest)."""
        future: asyncio.Future[models.TrackInfo] = asyncio.get_running_loop().create_future()
        self._published[cid] = future
        return future

    def send_offer(self, sdp: str, offer_id: int = 0) -> None:
        description = proto.SessionDescription(type="offer", sdp=sdp, id=offer_id)
        self.send(proto.SignalRequest(offer=description))

    def send_answer(self, sdp: str, answer_id: int = 0) -> None:
        description = proto.SessionDescription(type="answer", sdp=sdp, id=answer_id)
        self.send(proto.SignalRequest(answer=description))

    def send_trickle(self, candidate: str, mid: str, index: int, target: int) -> None:
        init = candidate_init(candidate, mid, index)
        request = proto.TrickleRequest(candidateInit=init, target=target)  # type: ignore[arg-type]
        self.send(proto.SignalRequest(trickle=request))

    def update_track_settings(
        self, track_sids: list[str], *, width: int = 0, height: int = 0, disabled: bool = False
    ) -> None:
        """Adaptive stream: the size a subscriber shows a video at
        (docs/protocol/04-subscribing.md §4.5)."""
        settings = proto.UpdateTrackSettings(
            track_sids=track_sids, width=width, height=height, disabled=disabled
        )
        self.send(proto.SignalRequest(track_setting=settings))

    async def leave(self) -> None:
        leave = proto.LeaveRequest(
            reason=models.DisconnectReason.CLIENT_INITIATED,
            action=proto.LeaveRequest.Action.DISCONNECT,
        )
        ws = self._ws
        if ws is not None and not ws.closed:
            try:
                await ws.send_bytes(proto.SignalRequest(leave=leave).SerializeToString())
            except (aiohttp.ClientError, ConnectionError):
                pass
        await self.close()

    async def close(self) -> None:
        for task in (self._pinger, self._reader):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self._ws is not None:
            await self._ws.close()
        for future in self._published.values():
            if not future.done():
                future.set_exception(SignalError("signalling closed"))
                future.exception()
        self._published.clear()
        self.closed.set()

    # -- internals ---------------------------------------------------------------------------
    async def _receive(self) -> proto.SignalResponse | None:
        assert self._ws is not None
        while True:
            message = await self._ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                response = proto.SignalResponse()
                response.ParseFromString(message.data)
                return response
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return None
            # text frames: LiveKit's JSON mode is only used when asked for; ignore

    async def _read(self) -> None:
        try:
            while True:
                response = await self._receive()
                if response is None:
                    break
                self._dispatch(response)
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            if self.leave_reason is None:
                self.leave_reason = "signalling closed"
            self.closed.set()
            for future in self._published.values():
                if not future.done():
                    future.set_exception(SignalError(self.leave_reason))
                    future.exception()

    def _dispatch(self, response: proto.SignalResponse) -> None:
        which = response.WhichOneof("message")
        if which == "offer" and self.on_offer is not None:
            self.on_offer(response.offer)
        elif which == "answer" and self.on_answer is not None:
            self.on_answer(response.answer)
        elif which == "trickle" and self.on_trickle is not None:
            try:
                candidate, _, _ = parse_candidate_init(response.trickle.candidateInit)
            except SdpError:
                candidate = ""
            if candidate:
                self.on_trickle(candidate, response.trickle.target)
        elif which == "track_published":
            future = self._published.pop(response.track_published.cid, None)
            if future is not None and not future.done():
                future.set_result(response.track_published.track)
        elif which == "request_response":
            result = response.request_response
            if result.WhichOneof("request") == "add_track":
                future = self._published.pop(result.add_track.cid, None)
                if future is not None and not future.done():
                    reason = proto.RequestResponse.Reason.Name(result.reason)
                    future.set_exception(SignalError(f"add_track refused: {reason}"))
        elif which == "update" and self.on_update is not None:
            self.on_update(response.update)
        elif which == "media_sections_requirement" and self.on_media_sections is not None:
            wanted = response.media_sections_requirement
            self.on_media_sections(wanted.num_audios, wanted.num_videos)
        elif which == "pong_resp":
            self.rtt_ms = time.time() * 1000 - response.pong_resp.last_ping_timestamp
        elif which == "leave":
            self.leave_reason = models.DisconnectReason.Name(response.leave.reason)
        if self.on_message is not None:
            self.on_message(response)

    async def _ping(self, interval: int) -> None:
        """ping_req every ping_interval seconds (docs/protocol/07-reconnect-ping-leave.md: the
        server drops us after ping_timeout without one)."""
        while True:
            await asyncio.sleep(interval)
            now_ms = int(time.time() * 1000)
            rtt = int(self.rtt_ms or 0)
            self.send(proto.SignalRequest(ping_req=proto.Ping(timestamp=now_ms, rtt=rtt)))


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a send on a closing socket: the reader notices the close
