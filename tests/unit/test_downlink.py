"""One subscriber's downlink (media/downlink.py) on a fake clock: its transport-cc feedback read
back, the allocation carried out on its downtracks (pause after a while, resume), and probes
that pad up to their goal and raise the estimate when they get through.

The downtracks are hand-written fakes with the surface the downlink uses."""

from __future__ import annotations

from dataclasses import dataclass, field

from roomcast.media.downlink import PAUSE_AFTER, PROBE_AGAIN, PROBE_DURATION, Downlink
from roomcast.media.downtrack import ALL_LAYERS, PADDING_SIZE, PAUSED
from roomcast.media.quality import QualityScorer
from roomcast.media.rtcp import TransportCC, parse_rtcp
from roomcast.media.twcc import TransportWide, build_twcc

COSTS = [50_000.0, 200_000.0, 600_000.0]


@dataclass
class FakeUpTrack:
    muted: bool = False
    priority: int = 0

    def layer_costs(self) -> list[float]:
        return list(COSTS)


@dataclass(eq=False)  # hashed by identity, as DownTrack
class FakeDownTrack:
    tw: TransportWide
    kind: str = "video"
    track_sid: str = "TR_video"
    uptrack: FakeUpTrack = field(default_factory=FakeUpTrack)
    wanted: int | None = 2
    muted: bool = False
    allowed: int = ALL_LAYERS
    current: int | None = 2
    rtt: float | None = 0.05
    remb_bitrate: int | None = None
    fraction_lost: int = 0
    bytes_sent: int = 0
    padding_sent: int = 0
    quality: QualityScorer = field(default_factory=lambda: QualityScorer("video/vp8"))

    def set_allowed(self, allowed: int) -> None:
        self.allowed = allowed
        if allowed >= 0:
            self.current = min(allowed, 2)

    def can_pad(self) -> bool:
        return True

    def send_padding(self, now: float) -> int:
        size = 12 + 8 + PADDING_SIZE
        self.tw.take(now, size)
        self.padding_sent += size
        return size

    def send_media(self, now: float, size: int = 1200) -> None:
        self.tw.take(now, size)
        self.bytes_sent += size


def downlink_with_track(*, allow_pause: bool = True) -> tuple[Downlink, FakeDownTrack]:
    tracks: dict[int, object] = {}
    downlink = Downlink("PA_sub", tracks, allow_pause=allow_pause)  # type: ignore[arg-type]
    track = FakeDownTrack(downlink.tw)
    tracks[1] = track
    return downlink, track


def feedback(tw: TransportWide, first: int, last: int, arrival: dict[int, float | None]) -> bytes:
    """The subscriber's transport-cc feedback for numbers first..last (µs arrivals)."""
    arrivals = [
        None if arrival.get(n) is None else int(arrival[n] * 1e6)  # type: ignore[operator]
        for n in range(first, last + 1)
    ]
    (packet,) = parse_rtcp(build_twcc(1, 2, first & 0xFFFF, 0, arrivals))
    assert isinstance(packet, TransportCC)
    return packet.fci


def test_feedback_is_matched_with_what_was_sent_and_counts_losses() -> None:
    downlink, track = downlink_with_track()
    tw = downlink.tw
    first = tw.next
    for i in range(40):
        track.send_media(10.0 + i * 0.01)
    arrival: dict[int, float | None] = {
        n: None if n % 10 == 3 else 20.0 + (n - first) * 0.01 for n in range(first, tw.next)
    }
    downlink.on_transport_feedback(feedback(tw, first, tw.next - 1, arrival), now=10.5)
    assert downlink.reported == 40 and downlink.lost == 4
    assert downlink.take_loss() == 0.1 and downlink.take_loss() == 0.0
    assert downlink.estimator.feedbacks == 1
    assert 0.8e6 < downlink.estimator.acked_rate() < 1e6  # 90 % of 1200 bytes every 10 ms
    downlink.on_transport_feedback(b"\x00\x01", now=10.6)  # garbage: ignored
    assert downlink.estimator.feedbacks == 1


def test_a_track_that_fits_at_no_layer_is_paused_after_a_while_then_resumed() -> None:
    downlink, track = downlink_with_track()
    downlink.estimator.delay_based = 40_000  # not even q (50 kbit/s) fits
    downlink.tick(100.0)
    assert track.allowed == 0 and downlink.changes == []  # the lowest layer, for now
    downlink.tick(100.0 + PAUSE_AFTER / 2)
    assert track.allowed == 0
    downlink.tick(100.0 + PAUSE_AFTER)
    assert track.allowed == PAUSED and downlink.changes == [("TR_video", True)]
    assert track.quality.paused
    downlink.changes.clear()
    downlink.estimator.delay_based = 400_000
    downlink.tick(103.0)
    assert track.allowed == 1 and downlink.changes == [("TR_video", False)]
    assert not track.quality.paused


def test_without_pausing_the_lowest_layer_stays() -> None:
    downlink, track = downlink_with_track(allow_pause=False)
    downlink.estimator.delay_based = 40_000
    for t in range(5):
        downlink.tick(100.0 + t)
    assert track.allowed == 0 and downlink.changes == []


def test_allocation_off_holds_nothing_back() -> None:
    downlink, track = downlink_with_track()
    downlink.enabled = False
    downlink.estimator.delay_based = 40_000
    downlink.tick(100.0)
    assert track.allowed == ALL_LAYERS


def test_a_probe_pads_up_to_its_goal_then_raises_the_estimate_when_it_got_through() -> None:
    downlink, track = downlink_with_track()
    estimator = downlink.estimator
    estimator.delay_based = 300_000
    tw = downlink.tw
    t = 100.0
    downlink.tick(t)  # h fits (250k of 270k), f does not: deficient, calm, so a probe starts
    assert track.allowed == 1 and downlink.probing() and tw.padding
    probe = estimator.probe
    assert probe is not None and 1.25 * 300_000 <= probe.goal <= 2 * 300_000
    first = tw.next
    sent_before = track.bytes_sent + track.padding_sent
    # Media at 200 kbit/s (a 500-byte packet every 20 ms); padding fills up to the goal.
    while t < probe.end:
        track.send_media(t, 500)
        downlink.pad(t)
        t += 0.02
    downlink.pad(t)
    assert not downlink.probing() and not tw.padding
    sent = track.bytes_sent + track.padding_sent - sent_before
    goal_bytes = probe.goal / 8 * PROBE_DURATION
    assert goal_bytes - 2 * 1000 < sent < goal_bytes + 2 * 1000
    assert track.padding_sent > 0
    # The subscriber got it all without queueing: the estimate jumps to what was delivered.
    arrival: dict[int, float | None] = {}
    for n in range(first, tw.next):
        entry = tw.lookup(n)
        assert entry is not None
        arrival[n] = entry[1] + 0.03
    downlink.on_transport_feedback(feedback(tw, first, tw.next - 1, arrival), now=t)
    downlink.tick(t + 0.5)
    assert downlink.probes == 1 and downlink.probes_won == 1
    assert (estimator.estimate or 0) > 0.8 * probe.goal
    assert downlink.next_probe <= t + 0.5 + PROBE_AGAIN  # won: the next step comes soon


def test_a_probe_reaches_a_goal_four_times_the_media_it_pads_after() -> None:
    """Padding goes out after media packets only: after the capped link's 640x360 layer and
    audio (about 70 packets a second, 480 kbit/s), a probe must still reach the 2 Mbit/s the
    top layer needs, or the top layer never comes back once the cap is lifted."""
    downlink, track = downlink_with_track()
    downlink.estimator.delay_based = 300_000
    t = 100.0
    downlink.tick(t)
    probe = downlink.estimator.probe
    assert probe is not None
    probe.goal = downlink._pad_goal = 2_000_000  # what a probe from 1.6 Mbit/s asks for
    sent_before = track.bytes_sent + track.padding_sent
    while t < probe.end:
        track.send_media(t, 850)
        downlink.pad(t)
        t += 1 / 70
    sent = track.bytes_sent + track.padding_sent - sent_before
    assert sent * 8 / PROBE_DURATION > 0.95 * probe.goal


def test_a_probe_that_queues_up_stops_at_once_and_the_next_waits_longer() -> None:
    downlink, track = downlink_with_track()
    estimator = downlink.estimator
    estimator.delay_based = 300_000
    tw = downlink.tw
    t = 100.0
    downlink.tick(t)
    probe = estimator.probe
    assert probe is not None
    first = tw.next
    arrival: dict[int, float | None] = {}
    queue = 0.0
    while downlink.probing():
        track.send_media(t, 1000)
        downlink.pad(t)
        t += 0.01
        for n in range(first, tw.next):  # a link slower than the probe: the queue grows
            if n not in arrival:
                entry = tw.lookup(n)
                assert entry is not None
                queue += 0.004
                arrival[n] = entry[1] + 0.03 + queue
        if round((t - 100.0) * 100) % 10 == 0:  # feedback every 100 ms
            done = max(arrival)
            downlink.on_transport_feedback(feedback(tw, first, done, arrival), now=t)
            first = done + 1
        assert t < probe.end + 0.01
    assert probe.congested and t < probe.end  # stopped before its end
    wait = downlink.next_probe - t
    downlink.tick(probe.end + 0.5)
    assert downlink.probes_won == 0 and downlink.next_probe - t > wait


def test_a_subscriber_may_allow_pauses_where_the_server_does_not() -> None:
    """ConnectionSettings.subscriber_allow_pause overrides rtc.congestion_control.allow_pause
    for that subscriber, before or after its first track."""
    from roomcast.media.forwarding_plane import ForwardingPlane
    from tests.unit.test_dynacast import video_track, viewer

    plane = ForwardingPlane(allow_pause=False)
    video_track(plane, 3)
    plane.set_allow_pause("PA_a", True)
    viewer(plane, "PA_a")
    viewer(plane, "PA_b")
    downlink_a, downlink_b = plane.downlink("PA_a"), plane.downlink("PA_b")
    assert downlink_a is not None and downlink_b is not None
    assert downlink_a.allocator.allow_pause and not downlink_b.allocator.allow_pause
    plane.set_allow_pause("PA_a", None)
    assert not downlink_a.allocator.allow_pause
