"""VP9 payload descriptors and AV1 Dependency Descriptors, parsed from real packets (fixtures
captured from the Python SDK publishing 1280x720 L3T3_KEY) and written back."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media import dependency_descriptor as ddw
from roomcast.media.av1 import DdPacket, DdReader
from roomcast.media.dependency_descriptor import (
    DdError,
    DependencyDescriptor,
    DependencyStructure,
    FrameTemplate,
)
from roomcast.media.rtp import find_extension, parse_rtp
from roomcast.media.vp9 import Vp9Descriptor

FIXTURES = Path(__file__).parent / "fixtures"
MID_EXT, DD_EXT = 4, 12  # extension ids in the fixtures


def fixture_packets(name: str) -> list[bytes]:
    lines = (FIXTURES / name).read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]


def dd_bytes(packet: bytes) -> bytes:
    header = parse_rtp(packet)
    found = find_extension(packet, header, DD_EXT)
    assert found is not None
    return packet[found[0] : found[0] + found[1]]


# -- VP9 (RFC 9628 §4.2) -----------------------------------------------------------------------


def vp9_descriptors() -> list[tuple[bytes, Vp9Descriptor]]:
    out = []
    for packet in fixture_packets("vp9_l3t3_key.rtp.hex"):
        header = parse_rtp(packet)
        descriptor = Vp9Descriptor()
        assert descriptor.parse(packet, header.payload_offset, header.payload_end)
        out.append((packet, descriptor))
    return out


def test_vp9_descriptors_of_an_l3t3_key_stream() -> None:
    parsed = vp9_descriptors()
    first = parsed[0][1]
    # A keyframe starts: flexible mode, picture id, layer indices, scalability structure.
    assert first.keyframe and first.begin and not first.end and first.flexible
    assert (first.spatial_id, first.temporal_id, first.inter_layer) == (0, 0, False)
    assert first.resolutions == ((320, 180), (640, 360), (1280, 720))
    assert {d.spatial_id for _, d in parsed} == {0, 1, 2}
    assert {d.temporal_id for _, d in parsed} == {0, 1, 2}
    # Each picture: every spatial layer once, B...E each, the marker on the last packet.
    pictures: dict[int, list[tuple[bytes, Vp9Descriptor]]] = {}
    for packet, descriptor in parsed:
        pictures.setdefault(descriptor.picture_id, []).append((packet, descriptor))
    for packets in list(pictures.values())[:-1]:  # the last one may be cut off
        layers = [d.spatial_id for _, d in packets if d.begin]
        assert layers == [0, 1, 2]
        assert [bool(p[1] & 0x80) for p, _ in packets] == [False] * (len(packets) - 1) + [True]
    # L3T3_KEY: upper layers predict from the lower one only on keyframes.
    keyframes = [d for _, d in parsed if d.keyframe]
    assert len(keyframes) >= 2
    assert all(not d.inter_layer for _, d in parsed if d.spatial_id and d.inter_picture)


def test_vp9_short_descriptors_are_refused() -> None:
    packet, descriptor = vp9_descriptors()[0]
    header = parse_rtp(packet)
    start = header.payload_offset
    for end in range(start, start + descriptor.header_size):
        assert not Vp9Descriptor().parse(packet, start, end), end
    single = Vp9Descriptor()
    assert single.parse(b"\x8c\x05", 0, 2)  # I, B, E; 7-bit picture id; no layers: one layer
    assert single.keyframe and (single.picture_id, single.spatial_id) == (5, 0)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40))
def test_vp9_garbage_never_raises(data: bytes) -> None:
    descriptor = Vp9Descriptor()
    if descriptor.parse(data, 0, len(data)):
        assert 0 < descriptor.header_size <= len(data)


# -- AV1 Dependency Descriptor (AV1 RTP specification, appendix A) -----------------------------


def av1_descriptors() -> list[DependencyDescriptor]:
    structure = None
    out = []
    for packet in fixture_packets("av1_l3t3_key.rtp.hex"):
        dd = ddw.parse(dd_bytes(packet), structure)
        structure = dd.structure or structure
        out.append(dd)
    return out


FIXTURE_STRUCTURE = av1_descriptors()[0].structure


def test_dd_structure_of_l3t3_key() -> None:
    first = av1_descriptors()[0]
    structure = first.structure
    assert structure is not None and first.start_of_frame
    assert structure.decode_target_count == 9 and structure.chain_count == 3
    assert structure.decode_target_layers == [(s, t) for s in range(3) for t in range(3)]
    assert structure.protected_by == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # one chain per spatial layer
    assert structure.resolutions == [(320, 180), (640, 360), (1280, 720)]
    assert structure.mask_up_to(1, 2) == 0b000111111
    # K-SVC: after the keyframe a spatial layer needs none of the others.
    s0_delta = next(t for t in structure.templates if t.spatial_id == 0 and t.fdiffs)
    assert s0_delta.dtis[3:] == (ddw.NOT_PRESENT,) * 6


def test_dd_of_every_fixture_packet_is_written_back_byte_for_byte() -> None:
    structure = None
    for packet in fixture_packets("av1_l3t3_key.rtp.hex"):
        raw = dd_bytes(packet)
        dd = ddw.parse(raw, structure)
        structure = dd.structure or structure
        assert structure is not None
        assert ddw.serialize(dd, structure) == raw


def test_dd_active_targets_and_custom_fields_round_trip() -> None:
    first = av1_descriptors()[0]
    structure = first.structure
    assert structure is not None
    later = DependencyDescriptor(
        start_of_frame=True,
        end_of_frame=False,
        template_id=5,
        frame_number=0xFFFE,
        dtis=(3, 1, 0, 2, 0, 0, 0, 0, 1),
        fdiffs=(1, 17, 300),
        chain_diffs=(0, 255, 7),
        active_decode_targets=0b000000111,
        custom_dtis=True,
        custom_fdiffs=True,
        custom_chains=True,
    )
    again = ddw.parse(ddw.serialize(later, structure), structure)
    assert (again.frame_number, again.active_decode_targets) == (0xFFFE, 0b111)
    assert (again.dtis, again.fdiffs, again.chain_diffs) == (later.dtis, later.fdiffs, (0, 255, 7))
    # A structure with a narrower mask keeps both; the full mask is implied and left out.
    keyframe = ddw.parse(dd_bytes(fixture_packets("av1_l3t3_key.rtp.hex")[0]), None)
    keyframe.active_decode_targets = 0b111
    narrowed = ddw.parse(ddw.serialize(keyframe, structure), None)
    assert narrowed.structure == structure and narrowed.active_decode_targets == 0b111
    keyframe.active_decode_targets = structure.all_targets
    assert len(ddw.serialize(keyframe, structure)) == len(
        dd_bytes(fixture_packets("av1_l3t3_key.rtp.hex")[0])
    )


def test_dd_structures_with_odd_shapes_round_trip() -> None:
    """ns() values at their boundaries, no chains, no resolutions, a template id offset."""
    for dt_count in (1, 2, 3, 5, 8):
        for chains in range(dt_count + 1):
            templates = [
                FrameTemplate(0, 0, (ddw.SWITCH,) * dt_count, (), (0,) * chains),
                FrameTemplate(0, 1, (ddw.DISCARDABLE,) * dt_count, (1, 15), (1,) * chains),
            ]
            structure = DependencyStructure(
                template_id_offset=60,
                decode_target_count=dt_count,
                templates=templates,
                chain_count=chains,
                protected_by=[dt % chains for dt in range(dt_count)] if chains else [],
            )
            dd = DependencyDescriptor(True, True, 61, 7, structure=structure)
            parsed = ddw.parse(ddw.serialize(dd, structure), None)
            assert parsed.structure == structure, (dt_count, chains)
            assert (parsed.temporal_id, parsed.fdiffs) == (1, (1, 15))


def test_dd_errors() -> None:
    structure = av1_descriptors()[0].structure
    with pytest.raises(DdError):
        ddw.parse(b"\x80\x00", structure)  # shorter than the mandatory fields
    with pytest.raises(DdError):
        ddw.parse(b"\x80\x00\x01", None)  # no structure yet
    with pytest.raises(DdError):
        ddw.parse(bytes([0x80 | 40, 0, 1]), structure)  # template 40 is not in the structure
    with pytest.raises(DdError):
        ddw.parse(dd_bytes(fixture_packets("av1_l3t3_key.rtp.hex")[0])[:20], None)  # truncated


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_dd_garbage_raises_only_dd_errors(data: bytes) -> None:
    for known in (None, FIXTURE_STRUCTURE):
        try:
            ddw.parse(data, known)
        except DdError:
            pass


def test_dd_reader_extends_frame_numbers_and_drops_frames_before_the_structure() -> None:
    reader, packet = DdReader(), DdPacket()
    raws = [dd_bytes(p) for p in fixture_packets("av1_l3t3_key.rtp.hex")]
    assert not reader.read(raws[2], packet)  # before any structure
    assert reader.read(raws[0], packet) and packet.structure_frame == packet.frame == 1
    assert reader.read(raws[2], packet) and packet.frame == 2
    structure = packet.structure
    assert structure is not None
    wrapped = ddw.serialize(DependencyDescriptor(True, True, 1, 0x0005), structure)
    before = ddw.serialize(DependencyDescriptor(True, True, 1, 0xFFF0), structure)
    reader.highest = 0xFFFA  # near the 16-bit wrap
    assert reader.read(wrapped, packet) and packet.frame == 0x10005
    assert reader.read(before, packet) and packet.frame == 0xFFF0
    masked = ddw.serialize(
        DependencyDescriptor(True, True, 1, 0x0006, active_decode_targets=0b111), structure
    )
    assert reader.read(masked, packet) and packet.publisher_mask == 0b111
