"""Scalable video in the engine (native/svc_forward.h) against the Python plane's SvcDownTrack:
the Python SDK's VP9 and AV1 L3T3_KEY packets (fixtures) go through both planes, to
subscribers at each spatial layer that change their layers mid-stream, and every subscriber
gets the same packets from both (same payloads, markers and descriptors, sequence numbers and
timestamps with the same steps), retransmissions included. On loopback sockets with real SRTP.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.native_plane import NativeForwardingPlane, native_module
from roomcast.media.native_tracks import NativeSvcDownTrack, NativeUpTrack
from roomcast.media.rtp import URI_DEPENDENCY_DESCRIPTOR, find_extension, parse_rtp
from roomcast.media.svc_downtrack import SvcDownTrack
from tests.unit.test_forwarder import Clock
from tests.unit.test_svc_codecs import fixture_packets
from tests.unit.test_svc_forwarding import publish_svc

from .test_native_cc import _Transport
from .test_native_engine import Peer, peer

native, why = native_module()
pytestmark = pytest.mark.skipif(native is None, reason=f"native plane not built: {why}")

SUB_DD_EXT, SUB_PT = 3, 100
LOW, MEDIUM, HIGH = 0, 1, 2


@dataclass
class Sent:
    """What a subscriber received, relative to its first packet."""

    marker: int
    seq_step: int
    ts_step: int
    descriptor: bytes | None
    payload: bytes


def received(packets: list[bytes]) -> list[Sent]:
    headers = [parse_rtp(p) for p in packets]
    out = []
    for packet, h in zip(packets, headers, strict=True):
        found = find_extension(packet, h, SUB_DD_EXT)
        descriptor = None if found is None else packet[found[0] : found[0] + found[1]]
        out.append(
            Sent(
                int(h.marker),
                (h.sequence - headers[0].sequence) & 0xFFFF,
                (h.timestamp - headers[0].timestamp) & 0xFFFFFFFF,
                descriptor,
                packet[h.payload_offset :],
            )
        )
    return out


def _subscribe(plane: ForwardingPlane, codec: str, name: str, transport: _Transport) -> object:
    downtrack = plane.add_downtrack(
        "TR_svc",
        name,
        ssrc=0x5000 + hash(name) % 1000,
        codecs={f"video/{codec}": SUB_PT},
        extensions={URI_DEPENDENCY_DESCRIPTOR: SUB_DD_EXT},
        send_rtp=transport.send_rtp,
        send_rtcp=transport.send_rtcp,
    )
    assert isinstance(downtrack, SvcDownTrack)
    return downtrack


def take(sub: Peer, count: int) -> list[bytes]:
    """The next `count` datagrams the engine sends a subscriber, as sent (waits for each)."""
    datagrams = []
    for _ in range(count):
        data = sub.receive_raw()
        assert data is not None, f"{len(datagrams)} of {count} datagrams came"
        datagrams.append(data)
    return datagrams


# Where each subscriber starts, and the layer it switches to at the packet index given.
PLANS = {"low": (LOW, 40, HIGH), "medium": (MEDIUM, 70, LOW), "high": (HIGH, 40, MEDIUM)}


@pytest.mark.parametrize("codec", ["vp9", "av1"])
def test_svc_subscribers_get_the_same_packets_from_both_planes(engine: tuple, codec: str) -> None:
    eng, sock = engine
    packets = fixture_packets(f"{codec}_l3t3_key.rtp.hex")
    # The Python plane, on a fake clock.
    clock = Clock()
    python = ForwardingPlane(clock=clock)
    publish_svc(python, codec, "pub", lambda data: None)
    sinks = {name: _Transport(-1) for name in PLANS}
    for name, (layer, _, _) in PLANS.items():
        _subscribe(python, codec, name, sinks[name])
        python.set_target_layer("TR_svc", name, layer)
    # The native plane.
    pub = peer(eng)
    plane = NativeForwardingPlane(lambda: eng)
    publisher = _Transport(pub.transport)
    track = publish_svc(plane, codec, publisher, publisher.send_rtcp)
    assert isinstance(track, NativeUpTrack)
    subs = {name: peer(eng) for name in PLANS}
    downs = {}
    for name, (layer, _, _) in PLANS.items():
        downs[name] = _subscribe(plane, codec, name, _Transport(subs[name].transport))
        assert isinstance(downs[name], NativeSvcDownTrack)
        plane.set_target_layer("TR_svc", name, layer)
    raw: dict[str, list[bytes]] = {name: [] for name in PLANS}
    cuts = sorted({at for _, at, _ in PLANS.values()} | {len(packets)})
    start = 0
    for cut in cuts:
        for packet in packets[start:cut]:
            clock.t += 0.01
            python.handle_rtp("pub", packet)
            pub.send_rtp(packet, sock.getsockname())
        for name in PLANS:  # as many as the Python plane sent it meanwhile
            raw[name] += take(subs[name], len(sinks[name].rtp) - len(raw[name]))
        for name, (_, at, layer) in PLANS.items():
            if at == cut:
                python.set_target_layer("TR_svc", name, layer)
                plane.set_target_layer("TR_svc", name, layer)
        start = cut
    got = {name: [subs[name].rx.unprotect(data) for data in raw[name]] for name in PLANS}
    for name in PLANS:
        assert subs[name].nothing_pending(), name  # and nothing more
        theirs, ours = received(sinks[name].rtp), received(got[name])
        assert len(ours) > 10 and ours == theirs, name
    # NACKs of a few packets: each plane resends what it sent under those numbers, byte for
    # byte (the datagram again, for the engine: same packet, same SRTP index).
    picks = (2, 5, -1)
    for name in PLANS:
        python_down = python.downtrack("TR_svc", name)
        assert python_down is not None
        before = len(sinks[name].rtp)
        python_down.retransmit([parse_rtp(sinks[name].rtp[i]).sequence for i in picks], clock.t)
        assert sinks[name].rtp[before:] == [sinks[name].rtp[i] for i in picks], name
        ours = [parse_rtp(got[name][i]).sequence for i in picks]
        downs[name].retransmit(ours, 0.0)  # type: ignore[attr-defined]
        assert take(subs[name], len(picks)) == [raw[name][i] for i in picks], name
    for name in PLANS:
        state = downs[name].engine.svc_state(downs[name].native_id)  # type: ignore[attr-defined]
        python_down = python.downtrack("TR_svc", name)
        assert isinstance(python_down, SvcDownTrack)
        assert state[2] == python_down.dropped  # the packets each left out
    plane.remove_uptrack("TR_svc")


def test_the_engine_counts_what_the_layer_choice_reads(engine: tuple) -> None:
    """SvcLayers on the native plane is fed from the engine's counters (svc_stats): frame
    rates per temporal layer and bytes per spatial layer as the Python plane counts them."""
    eng, sock = engine
    packets = fixture_packets("vp9_l3t3_key.rtp.hex")
    clock = Clock()
    python = ForwardingPlane(clock=clock)
    reference = publish_svc(python, "vp9", "pub", lambda data: None)
    sink = _Transport(-1)
    _subscribe(python, "vp9", "s", sink)
    pub = peer(eng)
    plane = NativeForwardingPlane(lambda: eng)
    publisher = _Transport(pub.transport)
    track = publish_svc(plane, "vp9", publisher, publisher.send_rtcp)
    assert isinstance(track, NativeUpTrack) and track.svc is not None
    sub = peer(eng)
    _subscribe(plane, "vp9", "s", _Transport(sub.transport))
    for packet in packets:
        clock.t += 0.01
        python.handle_rtp("pub", packet)
        pub.send_rtp(packet, sock.getsockname())
    take(sub, len(sink.rtp))  # the engine forwarded the last packet: it read them all
    track.sync()
    theirs = reference.svc  # type: ignore[attr-defined]
    assert track.svc.frames == theirs.frames
    assert track.svc.spatial_bytes == theirs.spatial_bytes
    assert track.svc.started is not None
    seen = [at > float("-inf") for at in track.svc.spatial_seen]
    assert seen == [at > float("-inf") for at in theirs.spatial_seen]
    track.sync()  # counted once
    assert track.svc.frames == theirs.frames
    plane.remove_uptrack("TR_svc")
