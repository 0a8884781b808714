"""SVC through the forwarding plane, fed real VP9 and AV1 L3T3_KEY packets (fixtures from the
Python SDK): each subscriber gets its spatial layers with continuous sequence numbers, a marker
on the last packet of its top layer, only decodable frames, and switches at the right frames."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media.av1 import DdPacket, DdReader
from roomcast.media.codecs import AV1, VP9
from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.rtcp import Pli, build_nack
from roomcast.media.rtp import URI_DEPENDENCY_DESCRIPTOR, URI_MID, find_extension, parse_rtp
from roomcast.media.svc_downtrack import SequenceMunger, SvcDownTrack
from roomcast.media.uptrack import UpTrack
from roomcast.media.vp9 import Vp9Descriptor
from tests.unit.test_forwarder import PUB, Clock, Sink, rtp
from tests.unit.test_svc_codecs import DD_EXT, MID_EXT, fixture_packets

SUB_DD_EXT = 3  # the subscribers' id for the Dependency Descriptor
LOW, MEDIUM, HIGH = 0, 1, 2
VP9_KEYFRAMES = (0, 10, 59, 93)  # packet indices in the VP9 fixture
AV1_KEYFRAMES = (0, 6, 69)


def publish_svc(
    plane: ForwardingPlane,
    codec: str,
    publisher: object,
    send_rtcp: Callable[[bytes], None],
    packet_trailer: bool = False,
) -> UpTrack:
    """The fixture's L3T3_KEY stream of `codec` published as track TR_svc on `plane`."""
    first = parse_rtp(fixture_packets(f"{codec}_l3t3_key.rtp.hex")[0])
    return plane.add_uptrack(
        "TR_svc",
        "video",
        codecs={first.payload_type: f"video/{codec}"},
        extensions={MID_EXT: URI_MID, DD_EXT: URI_DEPENDENCY_DESCRIPTOR},
        rids=[],
        ssrcs={first.ssrc: None},
        mid="1",
        send_rtcp=send_rtcp,
        publisher=publisher,
        packet_trailer=packet_trailer,
    )


class Svc:
    """A plane with one SVC track fed from a fixture, and subscribers on it."""

    def __init__(self, codec: str, *, packet_trailer: bool = False) -> None:
        self.codec = codec
        self.packets = fixture_packets(f"{codec}_l3t3_key.rtp.hex")
        self.clock = Clock()
        self.plane = ForwardingPlane(clock=self.clock)
        self.upstream = Sink()
        self.uptrack = publish_svc(self.plane, codec, PUB, self.upstream, packet_trailer)
        self.sinks: dict[str, Sink] = {}
        self.fed = 0

    def subscribe(self, name: str, layer: int) -> SvcDownTrack:
        sink = self.sinks[name] = Sink()
        downtrack = self.plane.add_downtrack(
            "TR_svc",
            name,
            ssrc=0x5000 + len(self.sinks),
            codecs={f"video/{self.codec}": 100},
            extensions={URI_DEPENDENCY_DESCRIPTOR: SUB_DD_EXT},
            send_rtp=sink,
            send_rtcp=Sink(),
        )
        self.plane.set_target_layer("TR_svc", name, layer)
        assert isinstance(downtrack, SvcDownTrack)
        return downtrack

    def feed(self, until: int | None = None) -> None:
        """Packets up to (not including) index `until`, 10 ms apart."""
        for packet in self.packets[self.fed : until]:
            self.clock.t += 0.01
            self.plane.handle_rtp(PUB, packet)
        self.fed = len(self.packets) if until is None else until

    def plis(self) -> int:
        return sum(isinstance(p, Pli) for p in self.upstream.rtcp())


@dataclass
class Frame:
    """A layer frame as a subscriber received it."""

    spatial: int
    packets: list[bytes]
    timestamp: int = 0
    number: int = -1  # AV1: extended frame number
    fdiffs: tuple[int, ...] = ()
    mask: int | None = None  # AV1: active decode targets announced


def check_stream(packets: list[bytes]) -> None:
    """Sequence numbers without a gap; per timestamp one marker, on the last packet."""
    headers = [parse_rtp(p) for p in packets]
    assert [(h.sequence - headers[0].sequence) & 0xFFFF for h in headers] == list(
        range(len(headers))
    )
    by_time: dict[int, list[bool]] = {}
    for h in headers:
        by_time.setdefault(h.timestamp, []).append(h.marker)
    for markers in by_time.values():
        assert markers == [False] * (len(markers) - 1) + [True], markers


def vp9_pictures(packets: Iterable[bytes]) -> list[list[tuple[int, int]]]:
    """(spatial id, picture id) of the layer frames of each picture, in order."""
    pictures: list[list[tuple[int, int]]] = []
    for packet in packets:
        header = parse_rtp(packet)
        d = Vp9Descriptor()
        assert d.parse(packet, header.payload_offset, header.payload_end)
        if d.begin:
            if d.spatial_id == 0:
                pictures.append([])
            pictures[-1].append((d.spatial_id, d.picture_id))
    return pictures


def av1_frames(packets: Iterable[bytes]) -> list[Frame]:
    reader, view, frames = DdReader(), DdPacket(), []
    for packet in packets:
        header = parse_rtp(packet)
        found = find_extension(packet, header, SUB_DD_EXT)
        assert found is not None, "every AV1 packet carries the rewritten descriptor"
        assert reader.read(packet[found[0] : found[0] + found[1]], view)
        dd = view.descriptor
        assert dd is not None
        if dd.start_of_frame:
            frames.append(
                Frame(
                    dd.spatial_id,
                    [],
                    header.timestamp,
                    view.frame,
                    dd.fdiffs,
                    dd.active_decode_targets,
                )
            )
        frames[-1].packets.append(packet)
    return frames


def keyframe_times(frames: list[Frame]) -> list[int]:
    """Timestamps of the temporal units that start with a keyframe (S0 without references)."""
    return [f.timestamp for f in frames if f.spatial == 0 and not f.fdiffs]


def assert_decodable(frames: list[Frame]) -> None:
    """Every frame's references (frame number - fdiff) reached the subscriber."""
    seen: set[int] = set()
    for frame in frames:
        assert all(frame.number - fdiff in seen for fdiff in frame.fdiffs), frame.number
        seen.add(frame.number)


# -- VP9 ---------------------------------------------------------------------------------------


def test_vp9_each_subscriber_gets_its_spatial_layers() -> None:
    svc = Svc("vp9")
    assert svc.uptrack.svc_codec == VP9
    for name, layer in (("low", LOW), ("medium", MEDIUM), ("high", HIGH)):
        svc.subscribe(name, layer)
    svc.feed()
    for name, layer in (("low", LOW), ("medium", MEDIUM), ("high", HIGH)):
        out = svc.sinks[name].packets
        check_stream(out)
        pictures = vp9_pictures(out)
        assert {len(p) for p in pictures} == {layer + 1}, name  # S0..layer of every picture
    # HIGH is the whole stream, rewritten.
    assert len(svc.sinks["high"].packets) == len(svc.packets)


def test_vp9_switches_down_at_a_picture_and_up_at_a_keyframe() -> None:
    svc = Svc("vp9")
    svc.subscribe("viewer", LOW)
    svc.feed(20)
    svc.clock.t += 1  # past the keyframe request throttle
    plis = svc.plis()
    svc.plane.set_target_layer("TR_svc", "viewer", HIGH)
    assert svc.plis() == plis + 1  # going up asks the publisher for a keyframe
    svc.feed(100)
    svc.plane.set_target_layer("TR_svc", "viewer", MEDIUM)
    svc.feed()
    out = svc.sinks["viewer"].packets
    check_stream(out)
    layers = [len(p) for p in vp9_pictures(out)]
    up = layers.index(3)  # the keyframe at packet 59 brought the upper layers
    assert set(layers[:up]) == {1} and layers[up:].count(3) >= 2
    assert layers[-1] == 2 and set(layers[layers.index(2, up) :]) == {2}  # down: next picture


# -- AV1 ---------------------------------------------------------------------------------------


def test_av1_each_subscriber_gets_its_decode_target() -> None:
    svc = Svc("av1")
    assert svc.uptrack.svc_codec == AV1
    for name, layer in (("low", LOW), ("medium", MEDIUM), ("high", HIGH)):
        svc.subscribe(name, layer)
    svc.feed()
    structure = svc.uptrack.svc.dd_reader.structure
    assert structure is not None
    for name, layer in (("low", LOW), ("medium", MEDIUM), ("high", HIGH)):
        out = svc.sinks[name].packets
        check_stream(out)
        frames = av1_frames(out)
        assert_decodable(frames)
        # K-SVC: keyframes bring S0..layer, after them only the layer itself is needed.
        keys = keyframe_times(frames)
        assert len(keys) == len(AV1_KEYFRAMES)
        assert {f.spatial for f in frames if f.timestamp in keys} == set(range(layer + 1))
        assert {f.spatial for f in frames if f.timestamp not in keys} == {layer}, name
        wanted = structure.mask_up_to(layer, 7)
        masks = {f.mask for f in frames}
        assert masks == ({None} if layer == HIGH else {wanted}), (name, masks)


def test_av1_frame_numbers_continue_across_a_pause() -> None:
    svc = Svc("av1")
    svc.subscribe("viewer", HIGH)
    svc.feed(40)
    svc.plane.set_target_layer("TR_svc", "viewer", None)  # paused (UpdateTrackSettings)
    svc.feed(60)
    svc.plane.set_target_layer("TR_svc", "viewer", HIGH)
    svc.feed()
    frames = av1_frames(svc.sinks["viewer"].packets)
    check_stream(svc.sinks["viewer"].packets)
    assert_decodable(frames)
    numbers = [f.number for f in frames]
    resumed = next(i for i, f in enumerate(frames) if f.number and not f.fdiffs and i > 5)
    assert numbers[resumed] == numbers[resumed - 1] + 1  # the keyframe at 69 continues


def test_av1_switches_up_at_a_keyframe_and_down_where_the_chain_allows() -> None:
    """Up: the upper layer's chain is broken until a keyframe (asked for at once). Down: the
    lower layer's chain (its T0 frames) is intact, so the next frame it can decode is the switch;
    until then the higher layer continues."""
    svc = Svc("av1")
    svc.subscribe("up", LOW)
    svc.subscribe("down", HIGH)
    svc.feed(20)
    svc.clock.t += 1  # past the keyframe request throttle
    plis = svc.plis()
    svc.plane.set_target_layer("TR_svc", "down", MEDIUM)
    assert svc.plis() == plis  # no keyframe needed
    svc.plane.set_target_layer("TR_svc", "up", HIGH)
    assert svc.plis() == plis + 1
    svc.feed()
    up = av1_frames(svc.sinks["up"].packets)
    down = av1_frames(svc.sinks["down"].packets)
    for frames in (up, down):
        check_stream([p for f in frames for p in f.packets])
        assert_decodable(frames)
    keys = keyframe_times(up)
    switch = next(i for i, f in enumerate(up) if f.timestamp == keys[-1])
    assert {f.spatial for f in up[:switch] if f.timestamp not in keys} == {LOW}
    assert {f.spatial for f in up[switch:] if f.timestamp not in keys} == {HIGH}
    deltas = [f.spatial for f in down if f.timestamp not in keyframe_times(down)]
    switch = deltas.index(MEDIUM)
    assert set(deltas[:switch]) == {HIGH} and set(deltas[switch:]) == {MEDIUM}
    assert switch >= 2


@pytest.mark.parametrize(("codec", "layer"), [("av1", LOW), ("vp9", MEDIUM)])
def test_retransmits_are_what_was_sent(codec: str, layer: int) -> None:
    """Rebuilt from the publisher's packet cache with the marker and descriptor first sent
    (a marker moved to the end of S1, a rewritten descriptor)."""
    svc = Svc(codec)
    downtrack = svc.subscribe("viewer", layer)
    svc.feed(60)
    out = svc.sinks["viewer"].packets
    moved = next(p for p in out if p[1] & 0x80)
    wanted = [parse_rtp(p).sequence for p in (out[5], out[9], moved)]
    future = (parse_rtp(out[-1]).sequence + 1) & 0xFFFF
    svc.plane.handle_subscriber_rtcp("viewer", build_nack(1, downtrack.ssrc, [*wanted, future]))
    assert sorted(out[-3:]) == sorted([out[5], out[9], moved])  # NACKs list them in order
    assert downtrack.retransmits == 3


@pytest.mark.parametrize(("codec", "late"), [("vp9", 30), ("av1", 56)])
def test_late_packets_get_the_number_kept_for_them(codec: str, late: int) -> None:
    """A packet that arrives two packets late is sent under the number it would have had."""

    def received(order: list[int]) -> dict[int, bytes]:
        svc = Svc(codec)
        svc.subscribe("viewer", HIGH)
        for index in order:
            svc.clock.t += 0.01
            svc.plane.handle_rtp(PUB, svc.packets[index])
        out = svc.sinks["viewer"].packets
        first = parse_rtp(out[0]).sequence
        return {(parse_rtp(p).sequence - first) & 0xFFFF: p[12:] for p in out}

    order = list(range(len(fixture_packets(f"{codec}_l3t3_key.rtp.hex"))))
    in_order = received(order)
    order[late : late + 3] = [late + 1, late + 2, late]
    assert received(order) == in_order
    assert sorted(in_order) == list(range(len(in_order)))


def test_sequence_munger() -> None:
    munger = SequenceMunger()
    munger.start(65534, 100)
    assert [munger.number(s, send) for s, send in [(65534, True), (65535, False), (0, True)]] == [
        100,
        -1,
        101,
    ]
    assert munger.number(3, True) == 104  # 1 and 2 are missing: 102 and 103 kept for them
    assert munger.number(2, True) == 103 and munger.number(2, True) == -1  # late, then dup
    assert munger.number(1, False) == -1  # late but not sent: its number stays a hole
    assert munger.number(65535, True) == -1  # long done
    assert munger.number(3 + 1000, True) == 105  # a jump: nothing reserved


@pytest.mark.parametrize("codec", ["vp9", "av1"])
def test_a_frame_rate_request_picks_the_temporal_layer(codec: str) -> None:
    """UpdateTrackSettings.fps: the lowest temporal layer measured to give about that rate."""
    svc = Svc(codec)
    svc.subscribe("viewer", HIGH)
    for index in range(len(svc.packets)):
        svc.feed(index + 1)
        if index % 10 == 0:
            svc.plane.tick()  # the server's media clock: frame rates are measured per second
        if index == 110:
            layers = svc.uptrack.svc
            assert layers is not None and len(layers.fps) == 8
            t0, t1, every = layers.fps[:3]
            assert 0 < t0 < t1 < every  # T0 alone, with T1, with T2 (all)
            svc.plane.set_target_layer("TR_svc", "viewer", HIGH, fps=t0)
            switched = len(svc.sinks["viewer"].packets)
    out = svc.sinks["viewer"].packets
    check_stream(out)
    if codec == "vp9":
        temporal = []
        for packet in out[switched + 3 :]:
            header = parse_rtp(packet)
            d = Vp9Descriptor()
            d.parse(packet, header.payload_offset, header.payload_end)
            temporal.append(d.temporal_id)
        assert set(temporal) == {0}
    else:
        frames = av1_frames(out)
        assert_decodable(frames)
        later = [f for f in frames if f.packets[0] in out[switched + 3 :]]
        assert later and all(f.mask == 0b001001001 for f in later)  # T0 of each spatial layer


def vp9_references_ok(packets: list[bytes]) -> bool:
    """Flexible mode: every layer frame's P_DIFF references (same spatial layer) were sent."""
    sent: set[tuple[int, int]] = set()
    for packet in packets:
        header = parse_rtp(packet)
        d = Vp9Descriptor()
        assert d.parse(packet, header.payload_offset, header.payload_end) and d.flexible
        if not d.begin:
            continue
        if d.inter_picture:
            i = header.payload_offset + 1 + (2 if packet[header.payload_offset + 1] & 0x80 else 1)
            i += 1  # layer indices
            while True:
                diff, more = packet[i] >> 1, packet[i] & 1
                if ((d.picture_id - diff) & 0x7FFF, d.spatial_id) not in sent:
                    return False
                i += 1
                if not more:
                    break
        sent.add((d.picture_id, d.spatial_id))
    return True


@pytest.mark.parametrize("codec", ["vp9", "av1"])
@pytest.mark.parametrize("every", [1, 2, 3, 5, 7])
def test_targets_changing_anywhere_keep_the_stream_whole(codec: str, every: int) -> None:
    """Targets changed between any two packets (inside pictures too): numbers stay continuous,
    each picture ends with one marker, and nothing references what was not sent."""
    svc = Svc(codec)
    svc.subscribe("viewer", HIGH)
    pattern = [LOW, HIGH, MEDIUM, LOW, MEDIUM, HIGH]
    for index in range(len(svc.packets)):
        if index % every == 0:
            layer = pattern[(index // every) % len(pattern)]
            svc.plane.set_target_layer("TR_svc", "viewer", layer)
        svc.feed(index + 1)
    out = svc.sinks["viewer"].packets
    assert len(out) > 20
    check_stream(out)
    if codec == "vp9":
        assert vp9_references_ok(out)
    else:
        assert_decodable(av1_frames(out))


def test_the_trailer_is_cut_where_a_subscribers_frame_ends() -> None:
    """A subscriber without CAP_PACKET_TRAILER at MEDIUM: S1 frames end its pictures, so their
    trailer goes (LiveKit strips at the marker it sends); one that reads trailers keeps them."""
    from tests.unit.test_publish_options import TRAILER

    svc = Svc("vp9", packet_trailer=True)
    for index, packet in enumerate(svc.packets):
        header = parse_rtp(packet)
        d = Vp9Descriptor()
        d.parse(packet, header.payload_offset, header.payload_end)
        if d.end:  # every layer frame ends with a trailer, as the SDK's frame transformer adds
            svc.packets[index] = packet + TRAILER
    svc.plane.set_reads_packet_trailer("reader", True)
    svc.subscribe("reader", MEDIUM)
    svc.subscribe("other", MEDIUM)
    svc.feed()
    reader, other = svc.sinks["reader"].packets, svc.sinks["other"].packets
    assert len(reader) == len(other) and all(p.endswith(TRAILER) for p in reader if p[1] & 0x80)
    cut = [(a, b) for a, b in zip(reader, other, strict=True) if a[12:] != b[12:]]
    assert all(a[12:] == b[12:] + TRAILER and b[1] & 0x80 for a, b in cut)  # at the markers
    assert len(cut) == sum(1 for p in other if p[1] & 0x80)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=24), st.binary(max_size=40)),
        max_size=30,
    ),
    st.integers(0, 2),
)
def test_garbage_through_svc_tracks_never_raises(
    packets: list[tuple[int, bytes, bytes]], layer: int
) -> None:
    """Random descriptors (VP9 payloads, AV1 Dependency Descriptors) after real keyframes."""
    for codec in ("vp9", "av1"):
        svc = Svc(codec)
        svc.subscribe("viewer", layer)
        svc.feed(12)
        first = parse_rtp(svc.packets[0])
        for seq, payload, descriptor in packets:
            ext = [(MID_EXT, b"1")] + ([(DD_EXT, descriptor)] if descriptor else [])
            svc.plane.handle_rtp(
                PUB, rtp(first.ssrc, seq, seq * 90, pt=first.payload_type, payload=payload, ext=ext)
            )
        svc.plane.tick()


@pytest.mark.parametrize("codec", ["vp9", "av1"])
def test_the_allocations_ceiling_limits_the_spatial_layers_and_a_pause_stops_all(
    codec: str,
) -> None:
    """The stream allocation (media/allocator.py) caps what a subscriber asked for: HIGH asked,
    MEDIUM allowed gives S0-S1; PAUSED sends nothing more; the spatial costs it allocates
    with grow layer by layer."""
    svc = Svc(codec)
    viewer = svc.subscribe("viewer", HIGH)
    viewer.set_allowed(MEDIUM)
    assert viewer.goal == MEDIUM
    svc.feed(VP9_KEYFRAMES[2] if codec == "vp9" else AV1_KEYFRAMES[2])  # whole pictures
    out = svc.sinks["viewer"].packets
    check_stream(out)
    if codec == "vp9":
        assert {len(p) for p in vp9_pictures(out)} == {MEDIUM + 1}
    else:
        assert {f.spatial for f in av1_frames(out)} <= {LOW, MEDIUM}
    sent = len(out)
    viewer.set_allowed(-1)  # PAUSED
    assert viewer.goal is None
    svc.feed()
    assert len(svc.sinks["viewer"].packets) == sent
    svc.clock.t += 2.1  # a measuring window
    svc.uptrack.tick(svc.clock.t)
    costs = svc.uptrack.layer_costs()
    assert len(costs) == 3 and costs == sorted(costs) and costs[0] > 0
