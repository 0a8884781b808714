"""One subscriber's downlink: its transport-wide sequence numbers, the bandwidth estimate its
feedback gives (media/bwe.py), the allocation of that estimate among its tracks
(media/allocator.py), and the probes that find out whether more would fit.

Congestion control lives here, per subscriber, in the media layer: the allocator chooses the
layers of all the subscriber's tracks at once, on the media tick, and each downtrack only
carries out its ceiling (`DownTrack.set_allowed`). Pauses and resumes are queued in `changes`
for the room layer to tell the client (`StreamStateUpdate`).

Probing: when some track gets less than it asked for and the link has been calm for a while,
padding-only packets on a video track's RTX stream (RFC 4588) are sent on top of the media for
a moment, at the rate the next layer up would need; they go out right after media packets
(`pad`, called by the downtracks), so no timer is needed. A probe that gets through raises the
estimate; one that makes a queue grow is stopped at once and the next one waits longer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .allocator import HEADROOM, PAUSED, UPGRADE_MARGIN, Demand, StreamAllocator
from .bwe import BandwidthEstimator, PacketResult
from .downtrack import ALL_LAYERS, PADDING_SIZE, DownTrack
from .downtrack import PAUSED as TRACK_PAUSED
from .rtcp import RtcpError
from .twcc import TransportWide, parse_twcc

PROBE_MIN_BPS = 100_000  # a probe asks for at least this much more than is sent
PROBE_OVERAGE = 1.1  # and 10 % more than the next layer needs
PROBE_OVER_ESTIMATE = 1.25  # and at least this times the estimate
PROBE_MAX_STEP = 2.0  # but at most this times the estimate: a big gap is probed in steps
PROBE_DURATION = 0.6  # s of padding
PROBE_WAIT_MIN, PROBE_WAIT_MAX = 2.0, 8.0  # s between probes: doubled after each failure
# s after a probe that got all it asked for: the next step at once, so a link that widened is
# found in a few steps (doubling each) rather than one step every couple of seconds
PROBE_AGAIN = 0.5
CALM = 1.0  # s without congestion before probing
PAUSE_AFTER = 2.0  # s a track must not fit at all before it is paused (the lowest layer until)
MAX_PADDING_BURST = 16  # padding packets sent after one media packet
PADDING_PACKET = 12 + 8 + PADDING_SIZE

log = logging.getLogger(__name__)


class Downlink:
    def __init__(
        self,
        subscriber: str,
        downtracks: dict[int, DownTrack],
        *,
        enabled: bool = True,
        allow_pause: bool = False,
        transport_wide: TransportWide | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.downtracks = downtracks  # the plane's map of this subscriber's tracks (by SSRC)
        self.enabled = enabled
        self.tw = TransportWide() if transport_wide is None else transport_wide
        self.tw.pad = self.pad
        self.estimator = BandwidthEstimator()
        self.allocator = StreamAllocator(allow_pause=allow_pause)
        self.changes: list[tuple[str, bool]] = []  # (track sid, paused) not yet told
        self.probes = self.probes_won = 0
        self.next_probe = 0.0
        self.probe_wait = PROBE_WAIT_MIN
        self.reported = self.lost = 0  # packets in the subscriber's feedback, and lost
        self._loss_mark = (0, 0)
        self.audio_bps = 0.0
        self.sent_bps = 0.0  # everything sent: media, retransmissions, padding
        self._last_tick: float | None = None
        self._pausing: dict[DownTrack, float] = {}  # since when a track does not fit at all
        self._last_bytes: dict[int, int] = {}
        self._pad_from: DownTrack | None = None
        self._pad_goal = 0.0  # bps the probe sends in all, media and padding
        self._pad_start = self._pad_end = 0.0
        self._pad_counted = 0  # transport-wide number up to which the probe's bytes are counted
        self._pad_bytes = 0  # bytes sent since the probe started, media and padding

    # -- feedback ----------------------------------------------------------------------------
    def on_transport_feedback(self, fci: bytes, now: float) -> None:
        """A transport-cc feedback from the subscriber (draft-holmer-rmcat-transport-wide-cc-
        extensions-01 §3.1), matched with what was sent."""
        try:
            feedback = parse_twcc(fci)
        except RtcpError:
            return
        tw = self.tw
        tw.refresh()
        base = tw.unwrap(feedback.base_sequence)
        tw.load(base)
        results = []
        for offset, arrival in enumerate(feedback.arrivals):
            sent = tw.lookup(base + offset)
            if sent is not None:
                results.append(
                    PacketResult(
                        sent[0], sent[1], sent[2], None if arrival is None else arrival / 1e6
                    )
                )
        self.estimator.on_feedback(results, now)
        self.reported += len(results)
        self.lost += sum(1 for result in results if result.arrival is None)
        probe = self.estimator.probe
        if probe is not None and probe.congested:
            self._stop_padding()

    # -- the media tick ----------------------------------------------------------------------
    def tick(self, now: float) -> None:
        self.tw.refresh()
        self._measure(now)
        downtracks = list(self.downtracks.values())
        rtts = [d.rtt for d in downtracks if d.rtt is not None]
        if rtts:
            self.estimator.on_rtt(max(rtts))
        rembs = [d.remb_bitrate for d in downtracks if d.remb_bitrate]
        if rembs:
            self.estimator.on_remb(max(r for r in rembs if r is not None), now)
        if downtracks and not self.estimator.feedbacks:  # no transport-cc: receiver reports
            fraction = max(d.fraction_lost for d in downtracks) / 256
            self.estimator.on_report_loss(fraction, self.sent_bps, now)
        outcome = self.estimator.finish_probe(now)
        if outcome is not None:
            self._log("probe %s", "won" if outcome else "lost")
            self._stop_padding()
            if outcome:
                self.probes_won += 1
                self.probe_wait = PROBE_WAIT_MIN
                self.next_probe = now + PROBE_AGAIN
            else:
                self.probe_wait = min(PROBE_WAIT_MAX, self.probe_wait * 2)
                self.next_probe = now + self.probe_wait
        video = [d for d in downtracks if d.kind == "video"]
        if self._pausing:
            self._pausing = {d: t for d, t in self._pausing.items() if d in video}
        if not self.enabled:
            for downtrack in video:
                self._apply(downtrack, ALL_LAYERS)
            return
        demands = [_demand(d) for d in video]
        allocation = self.allocator.update(self.estimator.estimate, self.audio_bps, demands)
        for downtrack in video:
            layer = allocation.layers.get(downtrack)
            if layer is None:
                self._apply(downtrack, ALL_LAYERS)
            elif layer != PAUSED:
                self._pausing.pop(downtrack, None)
                self._apply(downtrack, layer)
            elif downtrack.allowed != TRACK_PAUSED:
                # A pause is what the client sees most: only when the track keeps not fitting.
                since = self._pausing.setdefault(downtrack, now)
                self._apply(downtrack, TRACK_PAUSED if now - since >= PAUSE_AFTER else 0)
        if allocation.deficient:
            self._maybe_probe(now, allocation.cost + allocation.next_step, video)
        if self._pad_from is not None:
            self.pad(now)

    def _measure(self, now: float) -> None:
        """Send rates since the last tick: audio, and everything."""
        last = self._last_tick
        self._last_tick = now
        audio = total = 0
        seen: dict[int, int] = {}
        for ssrc, downtrack in self.downtracks.items():
            sent = downtrack.bytes_sent + downtrack.padding_sent
            seen[ssrc] = sent
            delta = max(0, sent - self._last_bytes.get(ssrc, sent))
            total += delta
            if downtrack.kind == "audio":
                audio += delta
        self._last_bytes = seen
        if last is not None and now > last:
            elapsed = now - last
            # Smoothed over about a second of ticks.
            self.audio_bps += (8 * audio / elapsed - self.audio_bps) * 0.3
            self.sent_bps += (8 * total / elapsed - self.sent_bps) * 0.3

    def _apply(self, downtrack: DownTrack, allowed: int) -> None:
        was_paused = downtrack.allowed == TRACK_PAUSED
        if allowed != downtrack.allowed:
            self._log("%s allowed %s → %s", downtrack.track_sid, downtrack.allowed, allowed)
        downtrack.set_allowed(allowed)
        paused = allowed == TRACK_PAUSED
        if paused != was_paused:
            self.changes.append((downtrack.track_sid, paused))
            downtrack.quality.set_paused(paused)

    # -- probes ------------------------------------------------------------------------------
    def _maybe_probe(self, now: float, wanted_video: float, video: list[DownTrack]) -> None:
        estimator = self.estimator
        if (
            estimator.probe is not None
            or estimator.estimate is None
            or now < self.next_probe
            or now - estimator.congested_at < CALM
        ):
            return
        pad_from = _padding_track(video)
        if pad_from is None:
            return
        needed = wanted_video / (HEADROOM * UPGRADE_MARGIN) + self.audio_bps
        estimate = estimator.estimate
        goal = max(
            min(needed * PROBE_OVERAGE, estimate * PROBE_MAX_STEP),
            self.sent_bps + PROBE_MIN_BPS,
            estimate * PROBE_OVER_ESTIMATE,
        )
        estimator.start_probe(goal, now, PROBE_DURATION)
        self._log("probe for %d kbit/s", goal / 1000)
        self.probes += 1
        self.next_probe = now + self.probe_wait
        self._pad_from = pad_from
        self._pad_goal = goal
        self._pad_start, self._pad_end = now, now + PROBE_DURATION
        self._pad_counted = self.tw.next
        self._pad_bytes = 0
        self.tw.start_padding(pad_from, goal, now, self._pad_end)

    def pad(self, now: float) -> None:
        """Padding owed by the running probe (called after media packets, and on the tick):
        whatever the media leaves short of the probe's goal since it started."""
        pad_from = self._pad_from
        if pad_from is None:
            return
        if now >= self._pad_end:
            self._stop_padding()
            return
        self.tw.refresh()
        self._count_sent()
        owed = self._pad_goal / 8 * (now - self._pad_start) - self._pad_bytes
        burst = 0
        while owed >= PADDING_PACKET and burst < MAX_PADDING_BURST:
            size = pad_from.send_padding(now)
            if not size:
                self._stop_padding()
                return
            self._pad_bytes += size
            self._pad_counted += 1
            owed -= size
            burst += 1

    def _count_sent(self) -> None:
        """Add up what was sent (any track, retransmissions too) since the last call."""
        tw = self.tw
        tw.load(self._pad_counted)
        for number in range(self._pad_counted, tw.next):
            entry = tw.lookup(number)
            if entry is not None:
                self._pad_bytes += entry[2]
        self._pad_counted = tw.next

    def _stop_padding(self) -> None:
        self._pad_from = None
        self.tw.stop_padding()

    def _log(self, message: str, *args: object) -> None:
        if log.isEnabledFor(logging.DEBUG):
            estimator = self.estimator
            estimate = estimator.estimate
            log.debug(
                "%s: " + message + " (estimate %s after %s, acked %d, sent %d kbit/s, loss %.2f,"
                " state %d)",
                self.subscriber,
                *args,
                "none" if estimate is None else f"{estimate / 1000:.0f}",
                estimator.cause or "-",
                estimator.acked_rate() / 1000,
                self.sent_bps / 1000,
                estimator.loss(),
                estimator.state,
            )

    def probing(self) -> bool:
        return self._pad_from is not None

    def take_loss(self) -> float:
        """The share of packets the subscriber's feedback reported lost since the last call."""
        reported, lost = self.reported - self._loss_mark[0], self.lost - self._loss_mark[1]
        self._loss_mark = (self.reported, self.lost)
        return lost / reported if reported else 0.0


def _demand(downtrack: DownTrack) -> Demand:
    uptrack = downtrack.uptrack
    wanted = downtrack.wanted
    if uptrack.muted or downtrack.muted:
        wanted = None  # nothing flows: nothing to allocate
    return Demand(downtrack, uptrack.priority, wanted, uptrack.layer_costs())


def _padding_track(video: Iterable[DownTrack]) -> DownTrack | None:
    """A video track that can carry probe padding, preferably one that is being forwarded."""
    candidates = [d for d in video if d.can_pad()]
    forwarding = [d for d in candidates if d.current is not None]
    chosen = forwarding or candidates
    return chosen[0] if chosen else None
