"""Connection quality of a track, scored as livekit-server scores it (its connection-quality
scorer): every `UPDATE_INTERVAL` seconds a window of packets, losses, round trip, jitter and
layer distance becomes a score out of 100, smoothed, and a quality.

- Packets: a simplified E-model, 100 minus a delay effect (half the round trip plus twice the
  jitter, in ms: /40 up to 160 ms, steeply after) minus the loss share weighted by codec (opus
  8, RED 4, video 10: 2 % video loss costs a quality level).
- Layers: each spatial layer below what the subscriber asked for costs 35 points.
- The lower of the two counts; a falling score follows quickly (0.8 of the new value), a rising
  one slowly (0.4), never below 30. Above 80 is EXCELLENT, above 40 GOOD, above 20 POOR, else
  LOST; a window with no packets scores POOR (LOST when its reports stopped too).
- Muted tracks keep their score; a track paused for lack of bandwidth drops to 30 (POOR).

Quality values are LiveKit's `ConnectionQuality` numbers; the score is sent as a MOS
(1.0-4.5, `ConnectionQualityInfo.score`). No I/O and no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

UPDATE_INTERVAL = 5.0  # s between scores (livekit-server's connection quality interval)
MAX_SCORE, MIN_SCORE = 100.0, 30.0
INCREASE, DECREASE = 0.4, 0.8
DISTANCE_WEIGHT = 35.0

# livekit.ConnectionQuality values (media/ does not import the protocol package).
POOR, GOOD, EXCELLENT, LOST = 0, 1, 2, 3
_ORDER = {LOST: 0, POOR: 1, GOOD: 2, EXCELLENT: 3}  # worst first
MAX_MOS = 4.5


def loss_weight(mime: str) -> float:
    """How much a percent of loss costs, by codec."""
    mime = mime.lower()
    if mime == "audio/opus":
        return 8.0
    if mime == "audio/red":
        return 4.0
    if mime.startswith("video/"):
        return 10.0
    return 0.0


@dataclass(slots=True)
class Window:
    """What one track saw in one scoring window."""

    packets: int = 0
    lost: int = 0
    rtt_ms: float = 0.0  # highest round trip in the window
    jitter_ms: float = 0.0  # highest jitter in the window
    layer_distance: float = 0.0  # spatial layers short of what was asked for, on average
    reports_stopped: bool = False  # no receiver report in the window either


def packet_score(window: Window, weight: float, *, rtt: bool, jitter: bool) -> float:
    delay = (window.rtt_ms / 2 if rtt else 0.0) + (window.jitter_ms * 2 if jitter else 0.0)
    delay_effect = delay / 40 if delay <= 160 else (delay - 120) / 10
    loss_effect = 100 * window.lost / window.packets * weight if window.packets else 0.0
    return max(0.0, MAX_SCORE - delay_effect - loss_effect)


def quality_of(score: float) -> int:
    if score > 80:
        return EXCELLENT
    if score > 40:
        return GOOD
    if score > 20:
        return POOR
    return LOST


def mos_of(score: float) -> float:
    """livekit-server's score → MOS mapping."""
    if score <= 0:
        return 1.0
    if score >= 100:
        return MAX_MOS
    return 1.0 + 0.035 * score + 0.000007 * score * (score - 60) * (100 - score)


class QualityScorer:
    """The smoothed score of one track (an uptrack, or a downtrack)."""

    __slots__ = ("include_jitter", "include_rtt", "paused", "score", "weight")

    def __init__(self, mime: str, *, include_rtt: bool = False, include_jitter: bool = False):
        self.weight = loss_weight(mime)
        self.include_rtt = include_rtt
        self.include_jitter = include_jitter
        self.score = MAX_SCORE
        self.paused = False

    def update(self, window: Window | None) -> None:
        """One window's figures; None when the track was muted (the score stays)."""
        if self.paused or window is None:
            return
        if window.packets == 0:
            score = quality_threshold(LOST if window.reports_stopped else POOR)
        else:
            packets = packet_score(window, self.weight, rtt=self.include_rtt,
                                   jitter=self.include_jitter)  # fmt: skip
            layers = max(0.0, min(MAX_SCORE, MAX_SCORE - window.layer_distance * DISTANCE_WEIGHT))
            score = min(packets, layers)
            factor = DECREASE if score < self.score else INCREASE
            score = max(MIN_SCORE, factor * score + (1 - factor) * self.score)
        self.score = score

    def set_paused(self, paused: bool) -> None:
        """Paused for lack of bandwidth: POOR at once; resumed: climbs back as usual."""
        if paused and not self.paused:
            self.score = MIN_SCORE
        self.paused = paused

    @property
    def quality(self) -> int:
        return quality_of(self.score)


def quality_threshold(quality: int) -> float:
    return {EXCELLENT: MAX_SCORE, GOOD: 80.0, POOR: 40.0, LOST: 20.0}[quality]


def worst(scores: Iterable[float]) -> tuple[int, float]:
    """A participant's quality: its worst track's (EXCELLENT, MOS 4.5 without tracks)."""
    lowest = MAX_SCORE
    for score in scores:
        lowest = min(lowest, score)
    return quality_of(lowest), round(mos_of(lowest), 2)


def is_lower(a: int, b: int) -> bool:
    """Whether quality `a` is worse than `b`."""
    return _ORDER[a] < _ORDER[b]
