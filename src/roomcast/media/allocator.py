"""Stream allocation for one subscriber: which layer of each of its video tracks fits its
downlink estimate (media/bwe.py), all tracks at once.

Audio is never cut: its rate comes off the budget first. Video tracks are served in priority
order (screen shares, then active speakers, then the rest) one layer at a time: every track
gets its lowest layer before any gets a second one, so as many tracks as possible keep moving;
a track whose lowest layer does not fit is paused. Each track's ceiling is what its subscriber
asked for (quality, dimensions, adaptive stream), never more. To keep layers from flapping, an
upgrade needs 10 % of headroom, and the allocation stays as it is while it costs no more than
the estimate without headroom (a layer's measured rate swings with its keyframes, and every
switch asks for one); beyond that it drops at once.

The allocator chooses; the downtracks carry the choice out (`DownTrack.set_allowed`). No I/O,
no clock: the caller passes the estimate and the tracks' demands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Share of the estimate media may use: retransmissions, RTCP, noise, and the IP/UDP/SRTP bytes
# around each packet (the estimate counts RTP bytes, as the layers' measured rates do).
HEADROOM = 0.9
UPGRADE_MARGIN = 0.9  # an upgrade must fit in this share of the budget
PAUSE_SHARE = 0.85  # the estimate is this share of what the link carried (media/bwe.py BETA)
PAUSED = -1  # a layer value: not forwarded, for lack of bandwidth


@dataclass(slots=True)
class Demand:
    """What one video track of the subscriber could receive."""

    key: object  # identifies the track (its downtrack)
    priority: int  # higher first
    max_layer: int | None  # the subscriber's ceiling (None: it asked for nothing)
    costs: Sequence[float]  # bps to forward layer 0, 1, …, max (each one whole)


@dataclass(slots=True)
class Allocation:
    """The layer each track may have (PAUSED, or None when nothing was asked for)."""

    layers: dict[object, int | None] = field(default_factory=dict)
    cost: float = 0.0  # bps the allocated video takes
    deficient: bool = False  # some track gets less than its ceiling
    next_step: float = 0.0  # bps the most important deficient track needs for one more layer


def allocate(
    budget: float,
    demands: Sequence[Demand],
    *,
    allow_pause: bool = True,
    pause_budget: float | None = None,
) -> Allocation:
    """Fill `budget` bps, lowest layers first, in priority order. A track whose lowest layer
    does not fit is paused only if it does not fit in `pause_budget` either (the estimate
    without headroom: a pause costs the viewer more than a little overshoot)."""
    order = sorted(demands, key=lambda d: -d.priority)  # stable: ties keep the caller's order
    layers: dict[object, int | None] = {}
    remaining = budget
    lenient = budget if pause_budget is None else max(budget, pause_budget)
    wanted = [d for d in order if d.max_layer is not None and d.costs]
    for demand in order:
        if demand.max_layer is None or not demand.costs:
            layers[demand.key] = None
    for demand in wanted:
        cost = demand.costs[0]
        if cost <= lenient or not allow_pause:
            layers[demand.key] = 0
            remaining -= cost
            lenient -= cost
        else:
            layers[demand.key] = PAUSED
    top = max((_ceiling(d) for d in wanted), default=0)
    for level in range(1, top + 1):
        for demand in wanted:
            if layers[demand.key] != level - 1 or level > _ceiling(demand):
                continue
            delta = demand.costs[level] - demand.costs[level - 1]
            if delta <= remaining:
                layers[demand.key] = level
                remaining -= delta
    return summarize(layers, order)


def summarize(layers: dict[object, int | None], demands: Sequence[Demand]) -> Allocation:
    """`layers` with their cost, and whether (and by how much) the most important track that
    gets less than its ceiling falls short. `demands` in priority order."""
    result = Allocation(dict(layers))
    for demand in sorted(demands, key=lambda d: -d.priority):
        layer = layers.get(demand.key)
        if layer is None or demand.max_layer is None or not demand.costs:
            continue
        if layer != PAUSED:
            result.cost += demand.costs[min(layer, len(demand.costs) - 1)]
        if layer < _ceiling(demand) and not result.deficient:
            result.deficient = True
            result.next_step = _step(demand, layer)
    return result


def unconstrained(demands: Sequence[Demand]) -> Allocation:
    """Every track at its ceiling (the estimate is unknown, or ample)."""
    layers: dict[object, int | None] = {
        d.key: None if d.max_layer is None or not d.costs else _ceiling(d) for d in demands
    }
    return summarize(layers, demands)


def _ceiling(demand: Demand) -> int:
    assert demand.max_layer is not None
    return max(0, min(demand.max_layer, len(demand.costs) - 1))


def _still_valid(layer: int | None, demand: Demand) -> bool:
    """Whether a layer allocated before still suits the demand (the subscriber may have asked
    for less, or for a track it had disabled)."""
    if demand.max_layer is None or not demand.costs:
        return layer is None
    return layer is not None and layer <= _ceiling(demand)


def _step(demand: Demand, layer: int) -> float:
    if layer == PAUSED:
        return demand.costs[0]
    return demand.costs[layer + 1] - demand.costs[layer]


class StreamAllocator:
    """The allocation of one subscriber, kept from one media tick to the next for hysteresis."""

    def __init__(self, *, allow_pause: bool = True) -> None:
        self.allow_pause = allow_pause
        self.last = Allocation()

    def update(
        self, estimate: float | None, audio_bps: float, demands: Sequence[Demand]
    ) -> Allocation:
        """Re-allocate for the current estimate (None: unknown, nothing is held back)."""
        if estimate is None:
            self.last = unconstrained(demands)
            return self.last
        budget = max(0.0, estimate * HEADROOM - audio_bps)
        # What got through when congestion last showed (media/bwe.py BETA): pause below it.
        pause_budget = max(0.0, estimate / PAUSE_SHARE - audio_bps)
        fitting = allocate(budget, demands, allow_pause=self.allow_pause, pause_budget=pause_budget)
        current = summarize({d.key: self.last.layers.get(d.key) for d in demands}, demands)
        complete = all(_still_valid(current.layers[d.key], d) for d in demands)
        if not complete or current.cost > budget / UPGRADE_MARGIN:
            chosen = fitting  # new tracks, changed requests, or no longer fitting: at once
        elif fitting.cost > current.cost:
            cautious = allocate(
                budget * UPGRADE_MARGIN,
                demands,
                allow_pause=self.allow_pause,
                pause_budget=budget * UPGRADE_MARGIN,
            )
            chosen = cautious if cautious.cost > current.cost else current
        else:
            chosen = current  # still fits: no switch (each costs a keyframe)
        self.last = chosen
        return chosen
