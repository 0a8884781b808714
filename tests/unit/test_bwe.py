"""The downlink bandwidth estimator (media/bwe.py) on synthetic transport-wide feedback, on a
fake clock: a sender, a bottleneck with a queue, feedback every 100 ms."""

from __future__ import annotations

from dataclasses import dataclass, field

from roomcast.media.bwe import (
    APP_LIMIT,
    BETA,
    NORMAL,
    OVERUSE,
    BandwidthEstimator,
    PacketResult,
    TrendlineDetector,
)

PACKET = 1200  # bytes


@dataclass
class Link:
    """A FIFO bottleneck of `capacity` bps, dropping what would wait over `queue_limit` s, and
    random-looking loss every `loss_every`-th packet (0: none)."""

    capacity: float
    queue_limit: float = 0.2
    delay: float = 0.02
    loss_every: int = 0
    busy_until: float = 0.0
    sequence: int = 0
    lost: int = 0
    pending: list[PacketResult] = field(default_factory=list)

    def send(self, now: float, size: int = PACKET) -> None:
        self.sequence += 1
        start = max(now, self.busy_until)
        lost = start - now > self.queue_limit or (
            self.loss_every and self.sequence % self.loss_every == 0
        )
        arrival = None
        self.lost += bool(lost)
        if not lost:
            self.busy_until = start + size * 8 / self.capacity
            arrival = self.busy_until + self.delay
        self.pending.append(PacketResult(self.sequence, now, size, arrival))

    def feedback(self, now: float) -> list[PacketResult]:
        """What the receiver reports at `now`: packets that arrived (or were due) by then."""
        due = [r for r in self.pending if (r.arrival or r.send_time + self.delay) <= now]
        self.pending = [r for r in self.pending if r not in due]
        return due


def run(
    estimator: BandwidthEstimator,
    link: Link,
    rate: float,
    seconds: float,
    start: float = 0.0,
    size: int = PACKET,
    *,
    adaptive: bool = False,
) -> float:
    """Send at `rate` bps for `seconds` through `link`, feeding the estimator every 100 ms;
    `adaptive`: at most 90 % of the estimate, as an allocation would."""
    sending = rate
    if adaptive and estimator.estimate is not None:
        sending = min(rate, 0.9 * estimator.estimate)
    now, next_feedback, end = start, start + 0.1, start + seconds
    while now < end:
        link.send(now, size)
        now += size * 8 / sending
        while next_feedback <= now:
            estimator.on_feedback(link.feedback(next_feedback), next_feedback)
            next_feedback += 0.1
            estimate = estimator.estimate
            if adaptive and estimate is not None:
                sending = min(rate, 0.9 * estimate)
    return end


def test_a_link_with_room_to_spare_sets_no_estimate() -> None:
    estimator = BandwidthEstimator()
    run(estimator, Link(capacity=2_000_000), rate=1_000_000, seconds=10)
    assert estimator.estimate is None
    assert estimator.state == NORMAL
    assert 0.9e6 < estimator.acked_rate() < 1.1e6


def test_sending_over_capacity_brings_the_estimate_under_it_and_keeps_it_near() -> None:
    estimator = BandwidthEstimator()
    link = Link(capacity=500_000)
    t = run(estimator, link, rate=1_500_000, seconds=1, adaptive=True)
    assert (estimator.estimate or 0) < 500_000  # the first queue overflow is answered at once
    estimates = []
    sent_before, lost_before = link.sequence, link.lost
    for _ in range(38):  # then 19 s of sending 90 % of the estimate: a sawtooth around it
        t = run(estimator, link, rate=1_500_000, seconds=0.5, start=t, adaptive=True)
        estimates.append(estimator.estimate or 0)
    assert BETA * 0.8 * 500_000 < min(estimates) and max(estimates) < 1.25 * 500_000
    used = 0.9 * sum(estimates) / len(estimates)
    assert 0.8 * 500_000 < used < 1.05 * 500_000  # the link stays busy, its queue short
    assert (link.lost - lost_before) / (link.sequence - sent_before) < 0.01
    assert t - estimator.congested_at < 6.0  # the sawtooth finds the limit again and again


def test_the_estimate_creeps_up_but_never_far_above_what_is_sent() -> None:
    estimator = BandwidthEstimator()
    t = run(estimator, Link(capacity=250_000), rate=1_500_000, seconds=3, adaptive=True)
    low = estimator.estimate
    assert low is not None and low < 250_000
    # The link widens, but the sender has only 300 kbit/s to send: the estimate grows up to a
    # little over that, not to the link's new width.
    t = run(estimator, Link(capacity=2_000_000), rate=300_000, seconds=10, start=t + 0.5)
    estimate = estimator.estimate
    assert estimate is not None and low < estimate <= APP_LIMIT * 300_000 + 20_000


def test_a_probe_that_gets_through_raises_the_estimate() -> None:
    estimator = BandwidthEstimator()
    link = Link(capacity=2_000_000)
    t = run(estimator, Link(capacity=400_000), rate=1_000_000, seconds=3, adaptive=True)
    assert (estimator.estimate or 0) < 450_000
    t = run(estimator, link, rate=300_000, seconds=2, start=t + 1)  # calm, on a wider link
    estimator.start_probe(900_000, t, 0.6)
    t = run(estimator, link, rate=900_000, seconds=0.6, start=t)
    assert estimator.finish_probe(t) is None  # its feedback is not all in yet
    t = run(estimator, link, rate=300_000, seconds=0.5, start=t)
    assert estimator.finish_probe(t) is True
    assert 800_000 < (estimator.estimate or 0) <= 900_000


def test_a_probe_that_builds_a_queue_fails_and_leaves_the_estimate() -> None:
    estimator = BandwidthEstimator()
    link = Link(capacity=500_000)
    t = run(estimator, link, rate=1_000_000, seconds=3, adaptive=True)
    t = run(estimator, link, rate=300_000, seconds=3, start=t + 0.5)
    before = estimator.estimate
    estimator.start_probe(1_200_000, t, 0.6)
    t = run(estimator, link, rate=1_200_000, seconds=0.6, start=t)
    assert estimator.probe is not None and estimator.probe.congested
    t = run(estimator, link, rate=300_000, seconds=0.5, start=t)
    assert estimator.finish_probe(t) is False
    # Nor does the queue it built lower the estimate while it drains.
    run(estimator, link, rate=300_000, seconds=1.5, start=t)
    assert before is not None and before <= (estimator.estimate or 0) <= before * 1.1


def test_heavy_loss_bounds_the_estimate_and_moderate_loss_does_not_block_recovery() -> None:
    estimator = BandwidthEstimator()
    t = run(estimator, Link(capacity=5_000_000, loss_every=5), rate=1_000_000, seconds=3)
    bound = estimator.loss_control.bound
    assert bound is not None and bound < 1_000_000  # 20 % lost
    assert estimator.estimate == bound
    # 5 % loss: the bound holds, it neither falls nor rises.
    t = run(estimator, Link(capacity=5_000_000, loss_every=20), 1_000_000, 3, start=t)
    assert estimator.loss_control.bound == bound
    # A delay estimate that fell for a moment recovers under 5 % loss.
    estimator.loss_control.bound = None
    estimator.delay_based = 500_000
    run(estimator, Link(capacity=5_000_000, loss_every=20), 1_000_000, 5, start=t)
    assert (estimator.estimate or 0) > 700_000


def test_remb_and_receiver_reports_stand_in_without_transport_feedback() -> None:
    estimator = BandwidthEstimator()
    estimator.on_remb(800_000, 1.0)
    assert estimator.estimate == 800_000
    estimator.on_report_loss(0.3, 800_000, 2.0)
    assert (estimator.estimate or 0) < 800_000 * 0.9


def test_the_trend_detector_sees_a_growing_queue_and_ignores_jitter() -> None:
    steady = TrendlineDetector()
    growing = TrendlineDetector()
    for i in range(200):
        send = i * 0.01
        jitter = 0.004 if i % 3 == 0 else 0.0
        steady.add(send, send + 0.05 + jitter)
        growing.add(send, send + 0.05 + i * 0.002)  # 2 ms more queue every 10 ms
    assert steady.state == NORMAL
    assert growing.state == OVERUSE


def feed_queue(estimator: BandwidthEstimator, start: float, seconds: float, growth: float) -> float:
    """600 kbit/s of packets every 10 ms from `start`, each waiting `growth` s longer than the
    one before (a queue building up), reported every 100 ms; returns the end."""
    t, queue, batch = start, 0.0, []
    sequence = int(start * 1000)
    while t < start + seconds:
        sequence += 1
        batch.append(PacketResult(sequence, t, 750, t + 0.02 + queue))
        queue += growth
        t += 0.01
        if len(batch) == 10:
            estimator.on_feedback(batch, t + 0.05)
            batch = []
    return t


def test_the_queue_a_probe_leaves_behind_lowers_nothing_a_later_one_does() -> None:
    estimator = BandwidthEstimator()
    t = feed_queue(estimator, 0.0, 2.0, 0.0)  # a calm link
    estimator.delay_based = 500_000
    estimator.start_probe(800_000, t, 0.6)
    estimator.probe.congested = True  # type: ignore[union-attr]  # stopped by its queue
    estimator.finish_probe(t + 0.9)
    # Packets sent right after it still find its queue growing: no decrease.
    t = feed_queue(estimator, t + 0.6, 0.5, 0.004)
    assert estimator.delay_based == 500_000 and estimator.state == OVERUSE
    t = feed_queue(estimator, t, 3.0, 0.0)  # drained
    # Later, a queue of the media's own: the estimate falls.
    feed_queue(estimator, t, 0.5, 0.004)
    assert (estimator.delay_based or 0) < 500_000 and estimator.cause == "delay"


def test_a_receiver_that_stamps_arrivals_late_now_and_then_is_no_queue() -> None:
    """A busy receiver reads its socket late for 60 ms every 300 ms: the packets that waited
    get one late timestamp, those after them are on time. No queue, so no decrease."""
    estimator = BandwidthEstimator()
    t = feed_queue(estimator, 0.0, 2.0, 0.0)
    estimator.delay_based = 500_000
    sequence, batch = 10_000, []
    for i in range(300):  # 3 s
        send = t + i * 0.01
        phase = (i * 0.01) % 0.3
        arrival = send + 0.02
        if phase < 0.06:
            arrival = send - phase + 0.06 + 0.02  # read at the end of the stall
        sequence += 1
        batch.append(PacketResult(sequence, send, 750, arrival))
        if len(batch) == 10:
            estimator.on_feedback(batch, send + 0.05)
            batch = []
    assert (estimator.delay_based or 0) >= 500_000 and estimator.cause != "delay"


def test_a_loss_bound_that_goes_leaves_the_estimate_known() -> None:
    """Loss set the only estimate; then the allocation sends far less than it (a lower layer)
    and the bound, far above what gets through, goes: the estimate stays where it was instead
    of becoming unknown, which would let the top layer back onto the link that lost it."""
    estimator = BandwidthEstimator()
    t = run(estimator, Link(capacity=5_000_000, loss_every=4), rate=1_000_000, seconds=3)
    bound = estimator.loss_control.bound
    assert bound is not None and estimator.delay_based is None
    run(estimator, Link(capacity=5_000_000), rate=150_000, seconds=10, start=t)
    assert estimator.loss_control.bound is None  # far above the 150 kbit/s that get through
    estimate = estimator.estimate
    assert estimate is not None and estimate <= bound * 1.1, (estimate, bound)


def test_a_probe_that_overfills_a_short_buffer_is_stopped_before_the_link_drops_anything() -> None:
    """The lab's capped link: 500 kbit/s, dropping what would wait over 200 ms; media at 430
    kbit/s, a probe for 850 (twice the estimate) and feedback every 60 ms (Chrome's at that
    rate). The probe is stopped while its queue is short enough for the link to drain it
    without a loss. Judged over the last 100 ms of arrivals, it ran on to a 197 ms queue here,
    and in the lab to losses, and Chromium froze for their retransmission."""
    estimator = BandwidthEstimator()
    link = Link(capacity=500_000)
    t = run(estimator, link, rate=1_000_000, seconds=3, adaptive=True)
    t = run(estimator, link, rate=430_000, seconds=3, start=t)
    probe = estimator.start_probe(850_000, t, 0.6)
    lost, worst_queue = link.lost, 0.0
    next_feedback, end = t + 0.06, t + 1.5
    while t < end:
        link.send(t, 900)
        worst_queue = max(worst_queue, link.busy_until - t)
        probing = t < probe.end and not probe.congested
        t += 900 * 8 / (probe.goal if probing else 430_000)
        while next_feedback <= t:
            estimator.on_feedback(link.feedback(next_feedback), next_feedback)
            next_feedback += 0.06
    assert probe.congested
    assert link.lost == lost and worst_queue < 0.175, worst_queue  # 156 ms
