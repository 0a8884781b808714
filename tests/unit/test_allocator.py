"""Stream allocation (media/allocator.py): which layer of each of a subscriber's video tracks fits
its estimate, all tracks at once, with hysteresis across media ticks."""

from __future__ import annotations

from roomcast.media.allocator import (
    HEADROOM,
    PAUSED,
    UPGRADE_MARGIN,
    Demand,
    StreamAllocator,
    allocate,
)

CAMERA = (50_000.0, 200_000.0, 600_000.0)  # q, h, f


def demand(
    key: str, max_layer: int | None = 2, *, priority: int = 0, costs: tuple[float, ...] = CAMERA
) -> Demand:
    return Demand(key, priority, max_layer, costs)


def test_every_track_gets_its_lowest_layer_before_any_gets_a_second() -> None:
    tracks = [demand("a"), demand("b"), demand("c")]
    allocation = allocate(450_000, tracks)
    # 3 x 50k, then a and b to h (150k more each); c's step no longer fits.
    assert allocation.layers == {"a": 1, "b": 1, "c": 0}
    assert allocation.cost == 450_000
    assert allocation.deficient and allocation.next_step == 400_000  # a's step to f


def test_priority_first_then_the_callers_order() -> None:
    tracks = [demand("camera"), demand("screen", priority=2), demand("speaker", priority=1)]
    allocation = allocate(500_000, tracks)
    assert allocation.layers == {"screen": 1, "speaker": 1, "camera": 0}
    assert allocate(120_000, tracks).layers == {"screen": 0, "speaker": 0, "camera": PAUSED}


def test_the_subscribers_request_is_a_ceiling_and_nothing_asked_is_nothing_allocated() -> None:
    tracks = [
        demand("small", max_layer=0),
        demand("off", max_layer=None),
        demand("mid", max_layer=1),
    ]
    allocation = allocate(10_000_000, tracks)
    assert allocation.layers == {"small": 0, "off": None, "mid": 1}
    assert not allocation.deficient and allocation.cost == 250_000


def test_a_track_that_fits_nowhere_is_paused_unless_pausing_is_off() -> None:
    tracks = [demand("a")]
    assert allocate(40_000, tracks).layers == {"a": PAUSED}
    # The pause budget (the estimate without headroom) lets a near miss through.
    assert allocate(40_000, tracks, pause_budget=55_000).layers == {"a": 0}
    assert allocate(1_000, tracks, allow_pause=False).layers == {"a": 0}


def test_no_estimate_holds_nothing_back() -> None:
    allocator = StreamAllocator()
    allocation = allocator.update(None, 30_000, [demand("a"), demand("b", max_layer=1)])
    assert allocation.layers == {"a": 2, "b": 1} and not allocation.deficient


def budget_for(video: float, audio: float) -> float:
    """The estimate at which `video` bps is exactly the budget."""
    return (video + audio) / HEADROOM


def test_upgrades_need_headroom_and_a_fitting_allocation_stays() -> None:
    audio = 40_000
    allocator = StreamAllocator()
    tracks = [demand("a")]
    assert allocator.update(budget_for(100_000, audio), audio, tracks).layers == {"a": 0}
    # h fits the budget exactly, but an upgrade needs 10 % more: stay at q.
    assert allocator.update(budget_for(200_000, audio), audio, tracks).layers == {"a": 0}
    just_enough = budget_for(200_000 / UPGRADE_MARGIN, audio) + 1
    assert allocator.update(just_enough, audio, tracks).layers == {"a": 1}
    # The estimate dips below the budget h needs, or h's measured rate swings up (a keyframe):
    # h stays while it costs no more than the estimate without headroom...
    assert allocator.update(200_000 + audio / HEADROOM, audio, tracks).layers == {"a": 1}
    swings = [demand("a", costs=(50_000, 230_000, 600_000))]
    assert allocator.update(just_enough, audio, swings).layers == {"a": 1}
    # ... and drops at once beyond that.
    assert allocator.update(190_000 + audio / HEADROOM, audio, tracks).layers == {"a": 0}


def test_a_changed_request_or_a_new_track_is_allocated_at_once() -> None:
    audio = 40_000
    allocator = StreamAllocator()
    estimate = budget_for(450_000, audio)
    assert allocator.update(estimate, audio, [demand("a")]).layers == {"a": 1}
    assert allocator.update(estimate, audio, [demand("a", max_layer=0)]).layers == {"a": 0}
    two = [demand("a"), demand("b")]
    assert allocator.update(estimate, audio, two).layers == {"a": 1, "b": 1}


def test_a_paused_track_resumes_once_its_lowest_layer_fits_with_headroom() -> None:
    audio = 40_000
    allocator = StreamAllocator()
    tracks = [demand("a")]
    assert allocator.update(60_000, audio, tracks).layers == {"a": PAUSED}
    assert allocator.update(budget_for(50_000, audio), audio, tracks).layers == {"a": PAUSED}
    estimate = budget_for(50_000 / UPGRADE_MARGIN, audio) + 1
    assert allocator.update(estimate, audio, tracks).layers == {"a": 0}
