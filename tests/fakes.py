"""Hand-written fakes of the Protocols in `roomcast.rooms.contracts` and `rooms.session`.

They record what the code under test asked of them, so room, subscription and session logic is
unit-tested without sockets, transports or an event loop.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit.protocol import models, rtc

from roomcast.auth import Claims, VideoGrant
from roomcast.rooms.contracts import JoinOptions, Publication, SignalSink


# -- time ------------------------------------------------------------------------------------
class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeScheduler:
    """A `Scheduler` on a fake clock: `advance` runs what falls due, in time order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        heapq.heappush(self._queue, (timer.when, next(self._order), timer))
        return timer

    def advance(self, seconds: float = 0.0) -> None:
        until = self.now + seconds
        while self._queue and self._queue[0][0] <= until:
            when, _, timer = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = until

    def pending(self) -> int:
        return sum(1 for _, _, timer in self._queue if not timer.cancelled)


# -- signalling ------------------------------------------------------------------------------
class FakeSink:
    """A `SignalSink` that records responses and how it was closed."""

    def __init__(self) -> None:
        self.sent: list[rtc.SignalResponse] = []
        self.dropped: list[rtc.SignalResponse] = []  # sent after close, as the edge drops them
        self.close_code: int | None = None
        self.close_message = ""

    def send(self, response: rtc.SignalResponse) -> None:
        (self.dropped if self.closed else self.sent).append(response)

    def close(self, code: int = 1000, message: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_message = code, message

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def kinds(self) -> list[str]:
        return [str(r.WhichOneof("message")) for r in self.sent]

    def of(self, kind: str) -> list[rtc.SignalResponse]:
        return [r for r in self.sent if r.WhichOneof("message") == kind]


_: type[SignalSink] = FakeSink  # FakeSink implements SignalSink


# -- media sides of a session ----------------------------------------------------------------
@dataclass
class FakeSubscriber:
    """A `TrackSubscriber`: which tracks it was told to receive."""

    participant_sid: str = ""
    tracks: dict[str, Publication] = field(default_factory=dict)
    targets: dict[str, tuple[int | None, float]] = field(default_factory=dict)
    on_target: Callable[[str, int | None, float], None] | None = None  # e.g. the plane's
    closed: bool = False

    def subscribe(self, publication: Publication) -> bool:
        if publication.track_sid in self.tracks:
            return False
        self.tracks[publication.track_sid] = publication
        publication.subscribers.add(self.participant_sid)
        return True

    def unsubscribe(self, track_sid: str) -> bool:
        publication = self.tracks.pop(track_sid, None)
        if publication is None:
            return False
        publication.subscribers.discard(self.participant_sid)
        return True

    def is_subscribed(self, track_sid: str) -> bool:
        return track_sid in self.tracks

    def set_target(self, track_sid: str, layer: int | None, fps: float) -> None:
        if track_sid in self.tracks:
            self.targets[track_sid] = (layer, fps)
            if self.on_target is not None:
                self.on_target(track_sid, layer, fps)

    def subscribed(self) -> list[str]:
        return list(self.tracks)

    def close(self) -> None:
        for sid in list(self.tracks):
            self.unsubscribe(sid)
        self.closed = True


@dataclass
class FakePublisher:
    """A `TrackPublisher`: its section → track map and the RTCP sent to it."""

    published: dict[str, str] = field(default_factory=dict)
    rtcp: list[bytes] = field(default_factory=list)

    def send_rtcp(self, packet: bytes) -> None:
        self.rtcp.append(packet)


def claims_for(identity: str, room: str = "r", **grant: object) -> Claims:
    video = VideoGrant(room_join=True, room=room, **grant)  # type: ignore[arg-type]
    return Claims(api_key="devkey", identity=identity, video=video)


@dataclass
class FakeSession:
    """A `ParticipantSession` that records what the room and the track logic asked of it."""

    participant_sid: str = ""
    claims: Claims = field(default_factory=lambda: claims_for("someone"))
    options: JoinOptions = field(default_factory=JoinOptions)
    joined: bool = True
    closed: bool = False
    subscriber: FakeSubscriber = field(default_factory=FakeSubscriber)
    publisher: FakePublisher | None = field(default_factory=FakePublisher)
    signals: list[rtc.SignalResponse] = field(default_factory=list)
    data: list[tuple[models.DataPacket, bool]] = field(default_factory=list)
    left: list[tuple[int, int]] = field(default_factory=list)
    muted: list[tuple[str, bool]] = field(default_factory=list)
    subscription_requests: list[tuple[list[str], bool]] = field(default_factory=list)
    resumed: int = 0
    self_changes: int = 0
    data_track_packets: list[bytes] = field(default_factory=list)
    data_track_backlog: int = 0  # what the `_data_track` channel holds unsent
    data_track_open: bool = True

    def __post_init__(self) -> None:
        self.subscriber.participant_sid = self.participant_sid

    def send_signal(self, message: rtc.SignalResponse) -> None:
        self.signals.append(message)

    def signals_of(self, kind: str) -> list[rtc.SignalResponse]:
        return [s for s in self.signals if s.WhichOneof("message") == kind]

    def disconnect(self, reason: int, action: int) -> None:
        self.left.append((reason, action))
        self.closed = True

    def send_data(self, packet: bytes, reliable: bool) -> bool:
        self.data.append((models.DataPacket.FromString(packet), reliable))
        return True

    def send_data_track(self, packet: bytes, *, max_backlog: int | None = None) -> bool:
        """Records the packet; refused while `data_track_backlog` exceeds `max_backlog`."""
        if max_backlog is not None and self.data_track_backlog > max_backlog:
            return False
        if not self.data_track_open:
            return False
        self.data_track_packets.append(packet)
        return True

    def resume(self, sink: SignalSink, options: JoinOptions) -> None:
        self.resumed += 1

    def on_self_changed(self) -> None:
        self.self_changes += 1

    def update_subscriptions(self, track_sids: list[str], subscribe: bool) -> None:
        self.subscription_requests.append((track_sids, subscribe))

    def mute_track(self, track_sid: str, muted: bool) -> None:
        self.muted.append((track_sid, muted))


# -- a session's transports ------------------------------------------------------------------
class FakeTransports:
    """`SessionTransports` without PeerConnections: tests drive the primary transport's state."""

    def __init__(self, *, subscriber_primary: bool = True, participant_sid: str = "") -> None:
        self.subscriber_primary = subscriber_primary
        self.subscriber = FakeSubscriber(participant_sid)
        self.publisher: FakePublisher | None = None
        self.connected = False
        self.offers = 0
        self.ice_restarts = 0
        self.data: list[tuple[bytes, bool]] = []
        self.data_track: list[bytes] = []
        self.closed = False
        self._send_signal: Callable[[rtc.SignalResponse], None] | None = None
        self._on_primary_state: Callable[[str], None] | None = None

    def bind(
        self,
        send_signal: Callable[[rtc.SignalResponse], None],
        on_primary_state: Callable[[str], None],
    ) -> None:
        self._send_signal = send_signal
        self._on_primary_state = on_primary_state

    def primary_state(self, state: str) -> None:
        """The primary transport reports `state` ("connected", "failed", "closed")."""
        self.connected = state == "connected"
        assert self._on_primary_state is not None, "not bound to a session"
        self._on_primary_state(state)

    def primary_connected(self) -> bool:
        return self.connected

    def send_subscriber_offer(self) -> None:
        self.offers += 1

    def restart_subscriber_ice(self) -> None:
        self.ice_restarts += 1
        self.offers += 1

    def send_data(self, packet: bytes, reliable: bool, *, lossy_allowed: bool) -> bool:
        if self.closed or (not reliable and not lossy_allowed):
            return False
        self.data.append((packet, reliable))
        return True

    def send_data_track(self, packet: bytes, *, max_backlog: int | None) -> bool:
        if self.closed:
            return False
        self.data_track.append(packet)
        return True

    def close(self) -> None:
        self.closed = True
