"""NACKs towards publishers (RFC 4585 §6.2.1): the generator on a fake clock, and the plane
asking a publisher again for what it lost, as negotiated."""

from __future__ import annotations

import itertools

from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.nack import MAX_AGE, MAX_INTERVAL, MAX_TRIES, MIN_INTERVAL, NackGenerator
from roomcast.media.rtcp import Nack
from tests.unit.test_forwarder import OUR_SSRC, PUB, SUB, VIDEO_SSRC, Clock, Sink, rtp, vp8


def test_a_gap_is_asked_for_after_a_moment_then_again_backing_off() -> None:
    nacker = NackGenerator()
    nacker.rtt = 0.1
    nacker.on_gap(10, 3, now=1.0)
    assert nacker.due(1.0) == []  # reordering gets its chance
    assert nacker.next_due == 1.0 + MIN_INTERVAL
    assert nacker.due(1.0 + MIN_INTERVAL) == [10, 11, 12]
    assert nacker.due(1.05) == []
    assert nacker.due(1.0 + MIN_INTERVAL + 0.1) == [10, 11, 12]  # one round trip later
    nacker.on_late(11)  # the retransmission came
    assert sorted(nacker.missing) == [10, 12] and nacker.recovered == 1
    waits = []
    now = 1.2
    while nacker.missing:
        now = nacker.next_due
        if nacker.due(now):
            waits.append(round(now, 4))
    assert len(waits) == MAX_TRIES - 2  # five requests in all, then it gives up
    gaps = [b - a for a, b in itertools.pairwise(waits)]
    assert all(MIN_INTERVAL <= gap <= MAX_INTERVAL for gap in gaps)
    assert gaps == sorted(gaps)  # backing off
    assert nacker.given_up == 2 and nacker.requested == 3 + 3 + 2 * (MAX_TRIES - 2)


def test_old_losses_are_given_up_and_huge_jumps_are_no_loss() -> None:
    nacker = NackGenerator()
    nacker.on_gap(100, 2, now=0.0)
    assert nacker.due(MAX_AGE + 0.1) == []
    assert nacker.given_up == 2 and not nacker.missing
    nacker.on_gap(5, 5000, now=2.0)  # a restarted sender
    assert not nacker.missing and nacker.next_due == float("inf")


def publish_video(plane: ForwardingPlane, pub_rtcp: Sink, *, nack: bool) -> Sink:
    plane.add_uptrack(
        "TR_v",
        "video",
        codecs={96: "video/vp8"},
        extensions={},
        rids=[],
        ssrcs={VIDEO_SSRC: None},
        mid="1",
        send_rtcp=pub_rtcp,
        publisher=PUB,
        nack=nack,
    )
    out = Sink()
    plane.add_downtrack(
        "TR_v", SUB, ssrc=OUR_SSRC, codecs={"video/vp8": 96}, extensions={},
        send_rtp=out, send_rtcp=Sink(),
    )  # fmt: skip
    return out


def nacks(sink: Sink) -> list[int]:
    return [seq for p in sink.rtcp() if isinstance(p, Nack) for seq in p.lost]


def test_the_plane_nacks_a_publishers_loss_and_forwards_the_retransmission_in_place() -> None:
    clock = Clock()
    plane = ForwardingPlane(clock=clock)
    pub_rtcp = Sink()
    out = publish_video(plane, pub_rtcp, nack=True)
    plane.handle_rtp(PUB, rtp(VIDEO_SSRC, 500, 9000, payload=vp8(1, 1, key=True)))
    plane.handle_rtp(PUB, rtp(VIDEO_SSRC, 503, 9000, payload=vp8(1, 1, key=False, start=False)))
    assert nacks(pub_rtcp) == []
    clock.t += MIN_INTERVAL
    plane.handle_rtp(PUB, rtp(VIDEO_SSRC, 504, 9000, payload=vp8(1, 1, key=False, start=False)))
    assert nacks(pub_rtcp) == [501, 502]
    (nack,) = [p for p in pub_rtcp.rtcp() if isinstance(p, Nack)]
    assert nack.media_ssrc == VIDEO_SSRC
    # The retransmission comes on the media SSRC and takes the number kept for it.
    plane.handle_rtp(PUB, rtp(VIDEO_SSRC, 501, 9000, payload=vp8(1, 1, key=False, start=False)))
    seqs = [h.sequence for h in out.parsed()]
    assert seqs[-1] == (seqs[0] + 1) & 0xFFFF and seqs[1] == (seqs[0] + 3) & 0xFFFF
    assert plane.uptrack("TR_v").layers[0].nacker.recovered == 1  # type: ignore[union-attr]
    # The media tick asks again for what is still missing.
    clock.t += 0.5
    plane.tick()
    assert nacks(pub_rtcp).count(502) == 2
    assert plane.totals()["nacks_sent"] == 3


def test_no_nack_to_a_publisher_that_did_not_negotiate_it() -> None:
    clock = Clock()
    plane = ForwardingPlane(clock=clock)
    pub_rtcp = Sink()
    publish_video(plane, pub_rtcp, nack=False)
    plane.handle_rtp(PUB, rtp(VIDEO_SSRC, 500, 9000, payload=vp8(1, 1, key=True)))
    plane.handle_rtp(PUB, rtp(VIDEO_SSRC, 505, 9000, payload=vp8(1, 1, key=False)))
    clock.t += 1.0
    plane.handle_rtp(PUB, rtp(VIDEO_SSRC, 506, 9000, payload=vp8(1, 1, key=False)))
    plane.tick()
    assert nacks(pub_rtcp) == []
