"""Dynacast decisions on a real ForwardingPlane's downtracks: enable at once, disable later."""

from __future__ import annotations

from livekit.protocol import rtc

from roomcast.media.downtrack import DownTrack
from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.rooms.dynacast import Dynacast


def video_track(plane: ForwardingPlane, layers: int) -> None:
    plane.add_uptrack(
        "TR_V",
        "video",
        codecs={96: "video/vp8"},
        extensions={},
        rids=["q", "h", "f"][:layers],
        ssrcs={},
        mid="0",
        publisher="PA_pub",
        send_rtcp=lambda _: None,
    )


def viewer(plane: ForwardingPlane, sid: str) -> DownTrack:
    return plane.add_downtrack(
        "TR_V",
        sid,
        ssrc=1234,
        codecs={"video/vp8": 96},
        extensions={},
        send_rtp=lambda _: None,
        send_rtcp=lambda _: None,
    )


def enabled(update: rtc.SignalResponse) -> list[bool]:
    return [q.enabled for q in update.subscribed_quality_update.subscribed_qualities]


def test_enable_now_disable_after_delay() -> None:
    plane, sent = ForwardingPlane(), []
    video_track(plane, 3)
    viewer(plane, "PA_a")  # wants the top layer until told otherwise
    dynacast = Dynacast(pause_delay=5.0)
    tracks = {"TR_V": (sent.append, "vp8", 3)}
    dynacast.tick(0.0, tracks, plane.downtracks())
    assert sent == []  # publishers start with every layer on: nothing to say
    plane.set_target_layer("TR_V", "PA_a", 0)
    dynacast.tick(1.0, tracks, plane.downtracks())
    dynacast.tick(5.9, tracks, plane.downtracks())
    assert sent == []  # not yet: a resize must not restart encoders
    dynacast.tick(6.0, tracks, plane.downtracks())
    assert enabled(sent[-1]) == [True, False, False]
    codec = sent[-1].subscribed_quality_update.subscribed_codecs[0]
    assert codec.codec == "vp8" and [q.enabled for q in codec.qualities] == [True, False, False]
    viewer(plane, "PA_b").set_target_layer(1)
    dynacast.tick(6.25, tracks, plane.downtracks())
    assert enabled(sent[-1]) == [True, True, False]  # a new viewer's need is met at once


def test_nobody_watching_pauses_everything_and_a_dip_is_forgiven() -> None:
    plane, sent = ForwardingPlane(), []
    video_track(plane, 2)
    dynacast = Dynacast(pause_delay=2.0)
    tracks = {"TR_V": (sent.append, "vp8", 2)}
    dynacast.tick(0.0, tracks, [])
    dynacast.tick(1.0, tracks, [viewer(plane, "PA_a")])
    dynacast.tick(2.5, tracks, [])
    assert sent == []  # the dip at 0.0 ended before the delay
    dynacast.tick(4.5, tracks, [])
    assert enabled(sent[-1]) == [False, False]
    dynacast.tick(5.0, {}, [])  # unpublished: its state is forgotten
    dynacast.tick(5.1, tracks, [])
    assert len(sent) == 1  # a fresh state starts from "all on" again, and waits


def test_layers_no_subscriber_link_carries_are_turned_off_and_back_on() -> None:
    """The allocation's ceiling counts (DownTrack.goal): a layer every viewer wants but no
    viewer's downlink carries is disabled; once one carries it again, enabled at once."""
    plane, sent = ForwardingPlane(), []
    video_track(plane, 3)
    slow, paused = viewer(plane, "PA_slow"), viewer(plane, "PA_paused")
    slow.set_allowed(1)  # media/allocator.py: h fits its estimate, f does not
    paused.set_allowed(-1)  # nothing fits
    dynacast = Dynacast(pause_delay=2.0)
    tracks = {"TR_V": (sent.append, "vp8", 3)}
    dynacast.tick(0.0, tracks, plane.downtracks())
    dynacast.tick(2.0, tracks, plane.downtracks())
    assert enabled(sent[-1]) == [True, True, False]
    slow.set_allowed(-1)
    dynacast.tick(2.5, tracks, plane.downtracks())
    dynacast.tick(4.5, tracks, plane.downtracks())
    assert enabled(sent[-1]) == [False, False, False]
    paused.set_allowed(1 << 16)  # its probe found room: everything it asks for
    dynacast.tick(4.75, tracks, plane.downtracks())
    assert enabled(sent[-1]) == [True, True, True]
