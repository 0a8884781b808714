"""Send-side bandwidth estimation for one subscriber, GCC-like (draft-ietf-rmcat-gcc-02), from
transport-wide feedback: what the link to the subscriber carries without queueing up.

Fed `PacketResult`s (when we sent each packet, when the subscriber received it, or that it was
lost) and the time; no I/O, so unit tests drive it with synthetic feedback on a fake clock.

- Delay: packets are grouped into bursts (5 ms of send time); the growth of the one-way delay
  between groups is smoothed and its trend over the last 20 groups compared with an adaptive
  threshold (gcc-02 §5.3-5.4). A rising trend means a queue is building: *overuse*, acted on
  only when every packet of the last 100 ms was also delayed 20 ms more than the lowest
  one-way delay of the last 20 s (a receiver stamping arrivals late for a moment is no queue).
- Loss: the share lost is measured over every 20 or more packets reported; over 10 % bounds the
  estimate too, 2-10 % holds that bound, less lifts it (gcc-02 §6): the lower of the two counts.
  Packets sent before a decrease do not count towards the next one (the queue that dropped them
  was already answered).
- The estimate starts unknown (nothing is held back), drops to 85 % of the rate that got
  through when congestion shows (the busiest 250 ms of the last half second: while a queue
  drains, the link delivers at its full rate, even when it carries less on average), creeps
  up again while the link is calm (to at most 1.2 times what is actually sent: an idle link
  proves nothing), and jumps up when a probe, padding sent on top of the media for a moment,
  got through without congestion (`start_probe`); a probe that makes the queue grow by 30 ms
  (over the last 20 ms of arrivals) is stopped at once, before a link with a short buffer
  drops anything.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

BURST = 0.005  # s of send time in one packet group (gcc-02 §5.2)
TREND_WINDOW = 20  # groups in the trend regression
SMOOTHING = 0.9
THRESHOLD_GAIN = 4.0
INITIAL_THRESHOLD = 12.5  # ms (gcc-02 §5.4)
K_UP, K_DOWN = 0.0087, 0.039
MIN_THRESHOLD, MAX_THRESHOLD = 6.0, 600.0
OVERUSE_TIME = 0.01  # s the trend must stay above the threshold
BETA = 0.85  # decrease to this share of the received rate (gcc-02 §5.5)
ACKED_WINDOW = 0.5  # s of arrivals the received rate is measured over
PEAK_WINDOW = 0.25  # s: a decrease starts from the busiest such stretch of those arrivals
BASE_WINDOW = 20.0  # s over which the lowest one-way delay is the queue-free one
QUEUE_GATE = 0.02  # s of queueing (over that lowest delay) an overuse must show to count
# s of arrivals whose lowest delay is the queue: a queue delays them all, whereas a receiver
# that stamps arrivals late for a moment (a busy machine) delays the first of a burst only
QUEUE_WINDOW = 0.1
PROBE_QUEUE = 0.03  # s of queueing that stops a probe at once (before the link drops packets)
# s of arrivals whose lowest delay stops a probe: short, as a probe's queue grows fast (at twice
# a link's rate, by a feedback interval's worth each interval) and goes on growing while the
# feedback is on its way; still a window, so a late stamp is no queue
PROBE_QUEUE_WINDOW = 0.02
PROBE_DRAIN = 0.5  # s after a probe's end during which the queue it built is its own doing
REACTION = 0.3  # s after a decrease before what is sent reflects it (a layer switch waits for
# a keyframe): losses of packets sent until then do not lower the estimate again
LOSS_MIN_PACKETS = 20  # packets reported before the loss share is judged
LOSS_HIGH, LOSS_LOW = 0.10, 0.02  # gcc-02 §6
MULTIPLICATIVE = 0.08  # increase per second far from the last congestion point
APP_LIMIT = 1.2  # the estimate grows to at most this times what is sent (+ APP_LIMIT_BPS)
APP_LIMIT_BPS = 10_000
MIN_ESTIMATE = 30_000  # bps: audio always fits
PROBE_MIN_SUCCESS = 0.8  # a probe that delivered less than this share of its goal is weak

NORMAL, OVERUSE, UNDERUSE = 0, 1, 2


@dataclass(slots=True)
class PacketResult:
    """One sent packet as the subscriber's feedback reports it."""

    sequence: int  # transport-wide, unwrapped
    send_time: float  # s, our clock
    size: int  # bytes
    arrival: float | None  # s, the subscriber's clock (only differences mean anything)


class TrendlineDetector:
    """Delay-gradient overuse detection (gcc-02 §5.3, §5.4, libwebrtc's trendline filter)."""

    __slots__ = (
        "accumulated",
        "base",
        "deltas",
        "first_arrival",
        "fresh",
        "fresh_queue",
        "group",
        "last_group",
        "last_send",
        "last_update",
        "over_since",
        "overuse_count",
        "previous_trend",
        "queue",
        "recent",
        "samples",
        "smoothed",
        "state",
        "threshold",
    )

    def __init__(self) -> None:
        # Current and previous group: [first send, last send, last arrival].
        self.group: list[float] | None = None
        self.last_group: list[float] | None = None
        self.accumulated = 0.0  # ms
        self.smoothed = 0.0
        self.samples: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=TREND_WINDOW
        )
        self.deltas = 0
        self.first_arrival: float | None = None
        self.threshold = INITIAL_THRESHOLD
        self.last_update: float | None = None
        self.over_since: float | None = None
        self.overuse_count = 0
        self.previous_trend = 0.0
        self.state = NORMAL
        # (arrival, one-way delay) of groups, rising delays only: the front is the lowest of
        # the last BASE_WINDOW (a sliding minimum). The clocks differ: only differences count.
        self.base: collections.deque[tuple[float, float]] = collections.deque()
        self.recent: collections.deque[tuple[float, float]] = collections.deque()  # likewise
        self.queue = 0.0  # s the groups of the last QUEUE_WINDOW waited at least
        self.fresh: collections.deque[tuple[float, float]] = collections.deque()  # likewise
        self.fresh_queue = 0.0  # s the groups of the last PROBE_QUEUE_WINDOW waited at least
        self.last_send = -math.inf  # when the last group measured was sent

    def add(self, send_time: float, arrival: float) -> None:
        group = self.group
        if group is None:
            self.group = [send_time, send_time, arrival]
            return
        if send_time < group[0]:
            return  # reordered from an earlier group
        if send_time - group[0] <= BURST:
            group[1] = max(group[1], send_time)
            group[2] = max(group[2], arrival)
            return
        self._measure_queue(group[2], group[2] - group[1])
        self.last_send = group[1]
        if self.last_group is not None:
            send_delta = group[1] - self.last_group[1]
            arrival_delta = group[2] - self.last_group[2]
            self._update(arrival_delta - send_delta, group[2])
        self.last_group = group
        self.group = [send_time, send_time, arrival]

    def _measure_queue(self, arrival: float, delay: float) -> None:
        base, recent, fresh = self.base, self.recent, self.fresh
        for window, span in (
            (base, BASE_WINDOW),
            (recent, QUEUE_WINDOW),
            (fresh, PROBE_QUEUE_WINDOW),
        ):
            while window and window[-1][1] >= delay:
                window.pop()
            window.append((arrival, delay))
            while window[0][0] < arrival - span:
                window.popleft()
        self.queue = recent[0][1] - base[0][1]
        self.fresh_queue = fresh[0][1] - base[0][1]

    def _update(self, delay_delta: float, arrival: float) -> None:
        self.deltas = min(self.deltas + 1, 1000)
        self.accumulated += delay_delta * 1000.0
        self.smoothed = SMOOTHING * self.smoothed + (1 - SMOOTHING) * self.accumulated
        if self.first_arrival is None:
            self.first_arrival = arrival
        self.samples.append(((arrival - self.first_arrival) * 1000.0, self.smoothed))
        trend = self.previous_trend
        if len(self.samples) == TREND_WINDOW:
            trend = _slope(self.samples)
        self._detect(trend, arrival)

    def _detect(self, trend: float, now: float) -> None:
        modified = min(self.deltas, 60) * trend * THRESHOLD_GAIN
        if modified > self.threshold:
            if self.over_since is None:
                self.over_since = now
            self.overuse_count += 1
            if (
                now - self.over_since >= OVERUSE_TIME
                and self.overuse_count > 1
                and trend >= self.previous_trend
            ):
                self.state = OVERUSE
                self.over_since = None
                self.overuse_count = 0
        elif modified < -self.threshold:
            self.over_since = None
            self.overuse_count = 0
            self.state = UNDERUSE
        else:
            self.over_since = None
            self.overuse_count = 0
            self.state = NORMAL
        self.previous_trend = trend
        self._adapt(modified, now)

    def _adapt(self, modified: float, now: float) -> None:
        """gcc-02 §5.4: the threshold follows the trend, quickly down and slowly up."""
        if self.last_update is None:
            self.last_update = now
        if abs(modified) > self.threshold + 15.0:
            self.last_update = now  # a spike: do not let it drag the threshold up
            return
        k = K_DOWN if abs(modified) < self.threshold else K_UP
        elapsed_ms = min((now - self.last_update) * 1000.0, 100.0)
        self.threshold += k * (abs(modified) - self.threshold) * elapsed_ms
        self.threshold = max(MIN_THRESHOLD, min(MAX_THRESHOLD, self.threshold))
        self.last_update = now


def _slope(samples: collections.deque[tuple[float, float]]) -> float:
    n = len(samples)
    mean_x = sum(x for x, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in samples)
    denominator = sum((x - mean_x) ** 2 for x, _ in samples)
    return numerator / denominator if denominator else 0.0


@dataclass(slots=True)
class Probe:
    """Padding sent on top of the media, from `start` to `end`, to see whether the link carries
    `goal` bps. The packets sent then are measured as the feedback comes in."""

    goal: float
    start: float
    end: float
    congested: bool = False
    first_arrival: float = math.inf
    last_arrival: float = -math.inf
    bytes: int = 0
    last_size: int = 0
    lost: int = 0
    received: int = 0

    def add(self, result: PacketResult) -> None:
        if not self.start <= result.send_time <= self.end:
            return
        if result.arrival is None:
            self.lost += 1
            return
        self.received += 1
        self.bytes += result.size
        if result.arrival < self.first_arrival:
            self.first_arrival = result.arrival
        if result.arrival > self.last_arrival:
            self.last_arrival = result.arrival
            self.last_size = result.size

    def rate(self) -> float:
        """bps that arrived, first to last arrival (the last packet's bytes did not take time)."""
        span = self.last_arrival - self.first_arrival
        if self.received < 5 or span <= 0.05:
            return 0.0
        return (self.bytes - self.last_size) * 8 / span


class LossControl:
    """The loss-based bound (gcc-02 §6): none while loss stays low; over 10 % lost, the estimate
    times (1 - loss/2), at most once per 300 ms plus a round trip; between 2 and 10 % it holds;
    under 2 % it grows 8 % a second, and goes once it is far above what gets through (the
    delay-based estimate then goes on from it: BandwidthEstimator._control).

    The share is judged over at least LOSS_MIN_PACKETS packets, then counting starts over; the
    packets sent before a decrease took effect are left out (`epoch`)."""

    __slots__ = ("bound", "epoch", "fraction", "last_change", "lost", "total")

    def __init__(self) -> None:
        self.bound: float | None = None
        self.last_change = -math.inf
        self.epoch = -math.inf  # packets sent before this do not count (set by decreases)
        self.lost = self.total = 0  # packets in the current measurement
        self.fraction = 0.0  # the last share judged

    def add(self, result: PacketResult) -> None:
        if result.send_time < self.epoch:
            return
        self.total += 1
        if result.arrival is None:
            self.lost += 1

    def forget(self) -> None:
        """Drop the current measurement (a probe's losses say nothing about the media)."""
        self.lost = self.total = 0

    def share(self) -> float | None:
        """The share lost in the current measurement, once it holds enough packets."""
        return self.lost / self.total if self.total >= LOSS_MIN_PACKETS else None

    def judge(self, loss: float, estimate: float, acked: float, rtt: float, now: float) -> None:
        """Act on a measured loss share (`estimate`: what the bound falls from; `acked`: what
        gets through)."""
        self.fraction = loss
        if loss > LOSS_HIGH:
            if now - self.last_change >= 0.3 + rtt and estimate > 0:
                self.bound = max(MIN_ESTIMATE, estimate * (1 - 0.5 * loss))
                self.last_change = now
                self.epoch = now + REACTION
        elif loss < LOSS_LOW and self.bound is not None:
            elapsed = min(now - self.last_change, 1.0)
            self.bound *= (1 + MULTIPLICATIVE) ** max(0.0, elapsed)
            self.last_change = now
            if self.bound > 2 * acked:
                self.bound = None  # far above what gets through: no longer a bound
        else:
            self.last_change = max(self.last_change, now - 1.0)


class BandwidthEstimator:
    """What one subscriber's downlink carries, in bps (None until congestion was seen): the
    lower of a delay-based estimate (AIMD on the trend detector) and a loss-based bound."""

    def __init__(self) -> None:
        self.detector = TrendlineDetector()
        self.delay_based: float | None = None
        self.loss_control = LossControl()
        self.rtt = 0.1
        self._arrivals: collections.deque[tuple[float, int]] = collections.deque()
        self._acked_bytes = 0
        self._last_decrease = -math.inf
        self._last_increase: float | None = None
        self._congestion_rate: float | None = None  # what got through at the last congestion
        self.probe: Probe | None = None
        self.last_probe: Probe | None = None  # the last one finished (diagnostics)
        self._probe_shadow = -math.inf  # packets sent before this: a probe's queue delays them
        self.congested_at = -math.inf  # when congestion was last seen
        self.cause = ""  # what lowered the estimate last (diagnostics)
        self.feedbacks = 0

    @property
    def estimate(self) -> float | None:
        bound = self.loss_control.bound
        if self.delay_based is None:
            return bound
        return self.delay_based if bound is None else min(self.delay_based, bound)

    # -- input -------------------------------------------------------------------------------
    def on_feedback(self, results: list[PacketResult], now: float) -> None:
        """One transport-cc feedback, matched with what was sent."""
        if not results:
            return
        self.feedbacks += 1
        probe = self.probe
        loss_control = self.loss_control
        for result in sorted(results, key=lambda r: r.sequence):
            if probe is not None:
                probe.add(result)
            loss_control.add(result)
            if result.arrival is None:
                continue
            self._arrivals.append((result.arrival, result.size))
            self._acked_bytes += result.size
            self.detector.add(result.send_time, result.arrival)
        self._trim_arrivals()
        self._control(now)

    def on_rtt(self, rtt: float) -> None:
        self.rtt = max(0.001, rtt)

    def on_remb(self, bitrate: float, now: float) -> None:
        """A receiver estimate (REMB) from a subscriber that sends no transport-cc feedback."""
        if self.feedbacks == 0:
            self.delay_based = max(MIN_ESTIMATE, float(bitrate))

    def on_report_loss(self, fraction: float, sent_bps: float, now: float) -> None:
        """The loss a receiver report gives (RFC 3550 §6.4.1), for a subscriber that sends no
        transport-cc feedback."""
        if self.feedbacks == 0:
            estimate = self.estimate or sent_bps
            self.loss_control.judge(fraction, estimate, sent_bps, self.rtt, now)

    # -- reading -----------------------------------------------------------------------------
    def acked_rate(self) -> float:
        """bps the subscriber received over the last ACKED_WINDOW of arrivals."""
        if len(self._arrivals) < 2:
            return 0.0
        span = max(self._arrivals[-1][0] - self._arrivals[0][0], ACKED_WINDOW / 2)
        return self._acked_bytes * 8 / span

    def peak_rate(self) -> float:
        """bps delivered in the busiest PEAK_WINDOW of the last ACKED_WINDOW of arrivals (the
        average over all of them when they span less)."""
        arrivals = list(self._arrivals)
        if len(arrivals) < 2 or arrivals[-1][0] - arrivals[0][0] < PEAK_WINDOW:
            return self.acked_rate()
        best = total = 0
        start = 0
        for arrival, size in arrivals:
            total += size
            while arrival - arrivals[start][0] > PEAK_WINDOW:
                total -= arrivals[start][1]
                start += 1
            if arrival - arrivals[0][0] >= PEAK_WINDOW:
                best = max(best, total - arrivals[start][1])  # the first one took no time
        return max(self.acked_rate(), best * 8 / PEAK_WINDOW)

    def loss(self) -> float:
        """The share lost in the last loss measurement."""
        return self.loss_control.fraction

    @property
    def state(self) -> int:
        return self.detector.state

    # -- probes ------------------------------------------------------------------------------
    def start_probe(self, goal: float, now: float, duration: float) -> Probe:
        self.probe = Probe(goal, now, now + duration)
        self._probe_shadow = now + duration + PROBE_DRAIN
        return self.probe

    def finish_probe(self, now: float) -> bool | None:
        """The outcome of the probe once its feedback is in (None: not yet, or no probe).
        True: the estimate went up to what the probe delivered."""
        probe = self.probe
        if probe is None or now < probe.end + max(0.25, 2 * self.rtt):
            return None
        self.probe = None
        self.last_probe = probe
        loss_control = self.loss_control
        loss_control.forget()  # what the probe lost says nothing about the media
        loss_control.epoch = max(loss_control.epoch, probe.end + REACTION)
        total = probe.received + probe.lost
        rate = probe.rate()
        if probe.congested or (total and probe.lost / total > LOSS_HIGH) or rate <= 0:
            return False
        delivered = min(rate, probe.goal)
        estimate = self.estimate
        if estimate is not None and delivered <= estimate:
            return False
        self.delay_based = delivered
        if self.loss_control.bound is not None:
            self.loss_control.bound = max(self.loss_control.bound, delivered)
        self._last_increase = now
        return delivered >= PROBE_MIN_SUCCESS * probe.goal

    # -- control -----------------------------------------------------------------------------
    def _trim_arrivals(self) -> None:
        arrivals = self._arrivals
        newest = arrivals[-1][0] if arrivals else 0.0
        while arrivals and newest - arrivals[0][0] > ACKED_WINDOW:
            self._acked_bytes -= arrivals.popleft()[1]

    def _control(self, now: float) -> None:
        acked = self.acked_rate()
        detector = self.detector
        state = detector.state
        loss_control = self.loss_control
        loss = loss_control.share()
        probe = self.probe
        probing = probe is not None and probe.start <= now
        probes_queue = not probing and detector.last_send <= self._probe_shadow
        if state == OVERUSE and (detector.queue < QUEUE_GATE or probes_queue):
            # Hold: no queue to speak of, or the one the last probe built, draining.
            state = NORMAL if self.delay_based is None else UNDERUSE
        if (
            state == OVERUSE
            or (loss is not None and loss > LOSS_HIGH)
            or (probing and detector.fresh_queue > PROBE_QUEUE)
        ):
            self.congested_at = now
            if probe is not None and probing:
                probe.congested = True  # the probe's own queue: keep the estimate as it was
                loss_control.forget()
                return
        if loss is not None:
            loss_control.forget()
            bound = loss_control.bound
            loss_control.judge(loss, self.estimate or acked, acked, self.rtt, now)
            if loss_control.bound is not None and (bound is None or loss_control.bound < bound):
                self.cause = f"loss {loss:.2f}"
            elif bound is not None and loss_control.bound is None and self.delay_based is None:
                # The bound went (far above what gets through: a lower layer is sent), but this
                # link did lose: the estimate stays known, the delay-based part goes on from it.
                # Unknown, it would let the layer that lost back onto the link.
                self.delay_based = bound
        if state == OVERUSE:
            if now - self._last_decrease >= 0.2 + self.rtt and acked > 0:
                delivered = self.peak_rate()
                target = BETA * delivered
                if self.delay_based is None or target < self.delay_based:
                    self.delay_based = max(MIN_ESTIMATE, target)
                    self._congestion_rate = delivered
                    self.cause = "delay"
                    loss_control.epoch = now + REACTION  # the same congestion, answered
                self._last_decrease = now
            self._last_increase = now
        elif state == NORMAL and self.delay_based is not None:
            self._increase(acked, now)
        else:
            self._last_increase = now

    def _increase(self, acked: float, now: float) -> None:
        estimate = self.delay_based
        assert estimate is not None
        last = self._last_increase if self._last_increase is not None else now
        elapsed = min(now - last, 1.0)
        self._last_increase = now
        ceiling = APP_LIMIT * acked + APP_LIMIT_BPS
        if estimate >= ceiling:
            return  # the link is not carrying enough to tell whether more would fit
        near = self._congestion_rate is not None and estimate < 1.5 * self._congestion_rate
        if near:  # additive: about one packet per round trip (gcc-02 §5.5)
            gain = 1200 * 8 / (self.rtt + 0.1) * elapsed
        else:
            gain = estimate * ((1 + MULTIPLICATIVE) ** elapsed - 1)
        self.delay_based = min(estimate + gain, ceiling)
