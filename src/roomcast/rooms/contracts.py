"""The faces the modules of `rooms/` show each other: Protocols and plain data.

This module imports nothing else from `rooms/`, so every other module there can depend on it
without a cycle (the room model, the track logic, the admin API and agents on one side; the
session that implements these faces on the other). Tests fake these Protocols by hand
(`tests/fakes.py`).

SignalSink          the signalling connection as rooms see it (the edge and the relay implement it)
JoinOptions         what a join or resume asked for (the `/rtc` query string)
ParticipantSession  what the room, track logic, admin API and agents ask of a connected session
TrackSubscriber     the subscribing side of a session: which published tracks it receives
TrackPublisher      the publishing side: which offered section carries which track
Publication         a published track, as subscribers need it
Scheduler           timers; an asyncio event loop is one, tests use a fake clock
SessionMetrics      what sessions report (telemetry.Metrics implements it)
leave_response      the `LeaveRequest` the server sends to end or restart a session
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from livekit.protocol import models, rtc

from roomcast.auth import Claims
from roomcast.media.sdp import Codec

Action = rtc.LeaveRequest.Action


class SignalSink(Protocol):
    """The signalling connection as the room layer sees it (implemented by the edge)."""

    def send(self, response: rtc.SignalResponse) -> None: ...

    def close(self, code: int = 1000, message: str = "") -> None: ...

    @property
    def closed(self) -> bool: ...


@dataclass
class JoinOptions:
    """Client options of a join: the `/rtc` query string
    (docs/protocol/01-signalling-connection.md §1.3)."""

    client_info: models.ClientInfo = field(default_factory=models.ClientInfo)
    auto_subscribe: bool = True
    adaptive_stream: bool = False
    # The client's word on congestion pauses of its video (None: the server's config decides).
    subscriber_allow_pause: bool | None = None
    reconnect: bool = False
    reconnect_sid: str = ""


def leave_response(reason: int, action: int) -> rtc.SignalResponse:
    """`LeaveRequest{reason, action}`; the client may reconnect unless told to disconnect."""
    return rtc.SignalResponse(
        leave=rtc.LeaveRequest(
            reason=reason,  # type: ignore[arg-type]
            action=action,  # type: ignore[arg-type]
            can_reconnect=action != Action.DISCONNECT,
        )
    )


@dataclass(slots=True)
class Publication:
    """A published track as subscribers need it."""

    track_sid: str
    publisher_sid: str
    publisher_identity: str
    kind: str  # "audio" | "video"
    codecs: list[Codec]  # as negotiated with the publisher (RTX excluded)
    layers: int = 1  # simulcast layers (1 when not simulcast)
    subscribers: set[str] = field(default_factory=set)  # subscriber participant sids
    # Subscribers told the publisher does not allow them (SubscriptionPermissionUpdate).
    denied: set[str] = field(default_factory=set)


class TrackSubscriber(Protocol):
    """The tracks a participant receives (its subscriber PeerConnection)."""

    def subscribe(self, publication: Publication) -> bool:
        """Start receiving; False if already subscribed."""
        ...

    def unsubscribe(self, track_sid: str) -> bool:
        """Stop receiving; False if not subscribed."""
        ...

    def is_subscribed(self, track_sid: str) -> bool: ...

    def set_target(self, track_sid: str, layer: int | None, fps: float) -> None:
        """The layer (None: paused) and frame rate (0: all) the participant wants of a track
        it is subscribed to; kept for the subscription, so it also applies to a downtrack
        that does not exist yet (the answer that creates it still on its way)."""
        ...

    def subscribed(self) -> list[str]:
        """Track sids currently received."""
        ...

    def close(self) -> None:
        """Drop every subscription (the participant left)."""
        ...


class TrackPublisher(Protocol):
    """The sections a participant publishes on (its publisher PeerConnection)."""

    published: dict[str, str]  # mid → track sid

    def send_rtcp(self, packet: bytes) -> None:
        """RTCP to the publisher (PLI, receiver reports, REMB)."""
        ...


class ParticipantSession(Protocol):
    """What the room, the track logic, the admin API and agents ask of a connected session."""

    claims: Claims  # the access token's grants as verified at join
    options: JoinOptions
    joined: bool  # the JoinResponse has been sent: updates may flow
    closed: bool

    @property
    def subscriber(self) -> TrackSubscriber: ...

    @property
    def publisher(self) -> TrackPublisher | None:
        """None until the client's first publisher offer."""
        ...

    def resume(self, sink: SignalSink, options: JoinOptions) -> None:
        """Re-attach a new signalling connection (reconnect=1)."""
        ...

    def on_self_changed(self) -> None:
        """The participant's own info changed (apply permission changes)."""
        ...

    def update_subscriptions(self, track_sids: list[str], subscribe: bool) -> None:
        """Subscribe to or unsubscribe from tracks, as if the client asked."""
        ...

    def mute_track(self, track_sid: str, muted: bool) -> None:
        """Mute or unmute a published track (the publisher is told)."""
        ...

    def send_signal(self, message: rtc.SignalResponse) -> None:
        """Queue a `SignalResponse` for the client (never blocks)."""
        ...

    def disconnect(self, reason: int, action: int) -> None:
        """Send `LeaveRequest{reason, action}` and close the connection."""
        ...

    def send_data(self, packet: bytes, reliable: bool) -> bool:
        """Send a serialised `DataPacket` on `_reliable` or `_lossy`; False if not sent."""
        ...

    def send_data_track(self, packet: bytes, *, max_backlog: int | None = None) -> bool:
        """Send one data-track packet on `_data_track`; False if not sent (the channel is not
        open, or more than `max_backlog` bytes already wait to be sent)."""
        ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Time and timers, as an asyncio event loop provides them (`time`, `call_later`)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable: ...


RtpEntry = Callable[[object, bytes], None]  # (publisher key, decrypted RTP) → forwarding plane


class SessionMetrics(Protocol):
    """What sessions report to telemetry (`roomcast.telemetry.Metrics` implements it)."""

    def count_signal_request(self, kind: str) -> None:
        """One SignalRequest of this oneof member was received."""
        ...

    def count_limit_hit(self, limit: str) -> None:
        """A client reached one of the server's resource limits (named as in /metrics)."""
        ...

    def timed_forward(self, forward: RtpEntry) -> RtpEntry:
        """Wrap the RTP entry point with a sampled latency measurement."""
        ...

    def count_data_track_packets(self, direction: str, packets: int, size: int) -> None:
        """Data-track packets received from publishers ("in") or forwarded ("out"), and
        their bytes."""
        ...

    def count_data_track_drops(self, reason: str, packets: int) -> None:
        """Data-track packets not forwarded, by reason."""
        ...
