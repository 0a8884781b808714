"""The scoring windows of published and subscribed tracks (media/quality.py scores them): what
each uptrack received and each downtrack delivered since the last window, read from their
counters. Called by the plane every `quality.UPDATE_INTERVAL` seconds; no I/O."""

from __future__ import annotations

from .downtrack import DownTrack
from .quality import UPDATE_INTERVAL, Window
from .uptrack import LAYER_TIMEOUT, UpTrack


def score_uptrack(track: UpTrack, now: float) -> None:
    """Loss as the network caused it: the sequence numbers that were missing when a later
    one arrived, recovered by NACK or not (a lossy link is a poor one, even when the
    retransmissions hide it); jitter from RFC 3550 §A.8; no round trip (a publisher sends no
    receiver reports)."""
    packets = lost = 0
    jitter_ms = 0.0
    sender_report: float | None = None
    for layer in track.layers:
        expected = layer.cycles + layer.max_seq - layer.base_seq + 1 if layer.packets else 0
        expected_delta = expected - layer.quality_expected
        gaps_delta = layer.gaps - layer.quality_gaps
        layer.quality_expected, layer.quality_gaps = expected, layer.gaps
        packets += max(0, expected_delta)
        lost += max(0, gaps_delta)
        jitter_ms = max(jitter_ms, layer.jitter * 1000 / track.clock_rate)
        if layer.sr_arrival is not None:
            sender_report = max(sender_report or layer.sr_arrival, layer.sr_arrival)
    if track.muted:
        track.quality.update(None)
    elif packets:
        track.quality.update(Window(packets, min(lost, packets), jitter_ms=jitter_ms))
    elif track.downtracks:  # someone waits for it, and nothing came
        stopped = sender_report is None or now - sender_report > UPDATE_INTERVAL
        track.quality.update(Window(reports_stopped=stopped))
    else:
        track.quality.update(None)


def score_downtrack(downtrack: DownTrack, transport_loss: float = 0.0) -> None:
    """Loss (the subscriber's receiver reports, or the share of the subscriber's transport-wide
    feedback that reported packets lost, whichever is worse: NACK hides the first), jitter and
    round trip from the receiver reports, and how far below what the subscriber asked for the
    forwarded layer stayed."""
    sent = downtrack.packets_sent - downtrack.quality_sent
    downtrack.quality_sent = downtrack.packets_sent
    lost_total = max(0, downtrack.packets_lost)
    lost = max(0, lost_total - downtrack.quality_lost, round(transport_loss * sent))
    downtrack.quality_lost = lost_total
    samples = downtrack.distance_samples
    distance = downtrack.distance_sum / samples if samples else 0.0
    downtrack.distance_sum, downtrack.distance_samples = 0.0, 0
    if downtrack.muted or downtrack.uptrack.muted or not sent:
        downtrack.quality.update(None)  # not streaming: the score stays
        return
    rate = downtrack.uptrack.clock_rate
    downtrack.quality.update(
        Window(
            packets=sent,
            lost=min(lost, sent),
            rtt_ms=(downtrack.rtt or 0.0) * 1000,
            jitter_ms=downtrack.jitter * 1000 / rate,
            layer_distance=distance,
        )
    )


def sample_distance(downtrack: DownTrack, now: float) -> None:
    """On each media tick: how many layers below what the subscriber asked for (and the
    publisher sends) this track is forwarded."""
    uptrack = downtrack.uptrack
    wanted = downtrack.wanted
    if wanted is None or len(uptrack.layers) < 2 or downtrack.allowed < 0:
        return
    live = [i for i, layer in enumerate(uptrack.layers) if now - layer.last_arrival < LAYER_TIMEOUT]
    if not live:
        return
    ceiling = min(wanted, max(live))
    forwarded = downtrack.current if downtrack.current is not None else downtrack.target
    if forwarded is None:
        return
    downtrack.distance_sum += max(0, ceiling - forwarded)
    downtrack.distance_samples += 1
