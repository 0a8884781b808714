"""The native Dependency Descriptor (native/dd.h) against media/dependency_descriptor.py and
media/av1.py, through the binding: parse on garbage, mutated and well-formed descriptors; the
rewrite against serialize; and one reader with several selectors over realistic AV1 SVC streams
(written with serialize: L1T3 to L3T3, full SVC and K-SVC, chains, active decode target masks,
new structures at keyframes, loss, reordering, frame-number wrap, target changes and resets),
compared packet by packet: every decision, every descriptor byte."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media import dependency_descriptor as ddw
from roomcast.media.av1 import DdPacket, DdReader, DdSelector
from roomcast.media.dependency_descriptor import (
    DdError,
    DependencyDescriptor,
    DependencyStructure,
    FrameTemplate,
)
from roomcast.media.native_plane import native_module
from roomcast.media.rtp import find_extension, parse_rtp

native, why = native_module()
pytestmark = pytest.mark.skipif(native is None, reason=f"native plane not built: {why}")

FIXTURE = Path(__file__).parent / "fixtures" / "av1_l3t3_key.rtp.hex"
DD_EXT = 12
MAX_FDIFFS = 16  # dd.h DD_MAX_FDIFFS: more is malformed in C (Python takes any number)


def fixture_descriptors() -> list[bytes]:
    out = []
    for line in FIXTURE.read_text().splitlines():
        if line and not line.startswith("#"):
            packet = bytes.fromhex(line)
            found = find_extension(packet, parse_rtp(packet), DD_EXT)
            assert found is not None
            out.append(packet[found[0] : found[0] + found[1]])
    return out


FIXTURE_DDS = fixture_descriptors()

# -- parse -------------------------------------------------------------------------------------


def structure_fields(s: DependencyStructure) -> tuple:
    return (
        s.template_id_offset,
        s.decode_target_count,
        s.chain_count,
        tuple(s.protected_by),
        [(t.spatial_id, t.temporal_id, t.dtis, t.fdiffs, t.chain_diffs) for t in s.templates],
        s.resolutions,
        s.decode_target_layers,
        tuple(dt for _, dt in s.targets_high_first),
        s.all_targets,
    )


def python_fields(raw: bytes, structure: DependencyStructure | None) -> tuple | str | None:
    """As dd_parse_fields answers; "limit" where C rejects what Python takes (too many fdiffs)."""
    try:
        dd = ddw.parse(raw, structure)
    except DdError:
        return None
    s = dd.structure
    if len(dd.fdiffs) > MAX_FDIFFS or (s and any(len(t.fdiffs) > MAX_FDIFFS for t in s.templates)):
        return "limit"
    return (
        int(dd.start_of_frame),
        int(dd.end_of_frame),
        dd.template_id,
        dd.frame_number,
        dd.spatial_id,
        dd.temporal_id,
        dd.dtis,
        dd.fdiffs,
        dd.chain_diffs,
        dd.active_decode_targets,
        (int(dd.custom_dtis), int(dd.custom_fdiffs), int(dd.custom_chains)),
        None if s is None else structure_fields(s),
    )


def assert_parse_agrees(raw: bytes, structure_raw: bytes | None) -> None:
    structure = None if structure_raw is None else ddw.parse(structure_raw, None).structure
    expected = python_fields(raw, structure)
    got = native.dd_parse_fields(raw, structure_raw)
    assert got == (None if expected == "limit" else expected), raw.hex()


# -- realistic streams -------------------------------------------------------------------------

PATTERN = {1: [0], 2: [0, 1], 3: [0, 2, 1, 2]}


@dataclass(frozen=True)
class Shape:
    spatial: int
    temporal: int
    ksvc: bool  # after the keyframe a spatial layer needs none of the others
    chains: bool
    offset: int  # template_id_offset
    resolutions: bool


class Encoder:
    """Frame references and chains of an L/S x T stream, as an SVC encoder lays them out."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.kinds: list[tuple[int, int, bool]] = []  # (spatial, temporal, key) per template
        for s in range(shape.spatial):
            self.kinds += [(s, 0, True), (s, 0, False)]
            self.kinds += [(s, t, False) for t in range(1, shape.temporal)]
        self.chain_count = shape.spatial if shape.chains else 0
        self.since_key = 0
        self.history: dict[int, list[tuple[int, int]]] = {}
        self.chain_last: list[int | None] = [None] * self.chain_count

    def unit(self, first: int, active: int) -> list[tuple[int, int, int, tuple, tuple]]:
        """One temporal unit from frame number `first`: (frame, kind, temporal, fdiffs, chains)."""
        key = self.since_key == 0
        pattern = PATTERN[self.shape.temporal]
        t = pattern[self.since_key % len(pattern)]
        self.since_key += 1
        if key:
            self.history = {}
            self.chain_last = [None] * self.chain_count
        frames = []
        for s in range(active):
            f = first + s
            refs: list[int] = []
            if not key:
                older = [g for g, u in self.history.get(s, []) if u < max(t, 1)]
                if older:
                    refs.append(f - older[-1])
            if s and (key or not self.shape.ksvc):
                refs.append(1)
            chains = []
            for c in range(self.chain_count):
                last = self.chain_last[c]
                chains.append(0 if last is None else min(f - last, 255))
                if t == 0 and (s == c or (s < c and (key or not self.shape.ksvc))):
                    self.chain_last[c] = f
            self.history.setdefault(s, []).append((f, t))
            frames.append((f, self.kinds.index((s, t, key)), t, tuple(refs), tuple(chains)))
        return frames


def make_structure(shape: Shape) -> DependencyStructure:
    enc = Encoder(shape)
    seen: dict[int, tuple[tuple, tuple]] = {}
    frame = 0
    for _ in range(2 * len(PATTERN[shape.temporal]) + 1):  # the steady state
        for _, kind, _, fdiffs, chains in enc.unit(frame, shape.spatial):
            seen[kind] = (fdiffs, chains)
            frame += 1
    dt_count = shape.spatial * shape.temporal
    templates = []
    for kind, (s, t, key) in enumerate(enc.kinds):
        dtis = []
        for dt in range(dt_count):
            ds, dtt = divmod(dt, shape.temporal)
            if s > ds or t > dtt or (shape.ksvc and s < ds and not key):
                dtis.append(ddw.NOT_PRESENT)
            elif t == 0:
                dtis.append(ddw.SWITCH if s == ds else ddw.REQUIRED)
            else:
                dtis.append(ddw.DISCARDABLE if t == dtt else ddw.REQUIRED)
        fdiffs, chains = seen.get(kind, ((), (0,) * enc.chain_count))
        templates.append(
            FrameTemplate(
                s,
                t,
                tuple(dtis),
                tuple(d for d in fdiffs if d <= 16),
                tuple(min(c, 15) for c in chains),
            )
        )
    return DependencyStructure(
        shape.offset,
        dt_count,
        templates,
        enc.chain_count,
        [dt // shape.temporal for dt in range(dt_count)] if enc.chain_count else [],
        [(320 << s, 180 << s) for s in range(shape.spatial)] if shape.resolutions else None,
    )


SHAPES = st.builds(
    Shape,
    spatial=st.integers(1, 3),
    temporal=st.integers(1, 3),
    ksvc=st.booleans(),
    chains=st.booleans(),
    offset=st.integers(0, 63),
    resolutions=st.booleans(),
)


def build_stream(
    rng: random.Random, shapes: list[Shape], units: int
) -> list[tuple[bytes, int, int]]:
    """(descriptor, marker, RTP timestamp) per packet, in sending order."""
    frame = rng.choice([0, rng.randrange(0x10000), 0xFFFF - rng.randrange(40)])
    timestamp = rng.randrange(1 << 32)
    packets = []
    shape = shapes[0]
    structure = make_structure(shape)
    enc = Encoder(shape)
    key_every = rng.choice([8, 20, 1000])
    active, changed = shape.spatial, -10
    for unit in range(units):
        key = unit == 0 or (unit % key_every == 0) or rng.random() < 0.03
        if key and unit:
            if rng.random() < 0.5:
                shape = rng.choice(shapes)
                structure = make_structure(shape)
                enc = Encoder(shape)
            enc.since_key = 0
            active = rng.randint(1, shape.spatial)
            changed = unit
        elif active > 1 and rng.random() < 0.05:
            active -= 1
            changed = unit
        layers_mask = structure.mask_up_to(active - 1, 7)
        frames = enc.unit(frame, active)
        for i, (f, kind, _, fdiffs, chains) in enumerate(frames):
            template = structure.templates[kind]
            n = rng.randint(1, 3)
            for k in range(n):
                first_packet_of_key = key and i == 0 and k == 0
                with_mask = unit - changed < 3 and (k == 0 or rng.random() < 0.3)
                dd = DependencyDescriptor(
                    start_of_frame=k == 0,
                    end_of_frame=k == n - 1,
                    template_id=(shape.offset + kind) % 64,
                    frame_number=f & 0xFFFF,
                    dtis=template.dtis,
                    fdiffs=fdiffs,
                    chain_diffs=chains,
                    structure=structure if first_packet_of_key else None,
                    active_decode_targets=layers_mask if with_mask else None,
                    custom_fdiffs=fdiffs != template.fdiffs,
                    custom_chains=chains != template.chain_diffs,
                )
                if rng.random() < 0.02:  # a custom DTI now and then
                    dd.dtis = tuple(rng.randrange(4) for _ in dd.dtis)
                    dd.custom_dtis = True
                last = i == len(frames) - 1 and k == n - 1
                packets.append((ddw.serialize(dd, structure), 0x80 if last else 0, timestamp))
        frame += len(frames)
        timestamp = (timestamp + 3000) & 0xFFFFFFFF
    return packets


def network(rng: random.Random, packets: list, loss: float, reorder: float) -> list:
    out = [p for p in packets if rng.random() >= loss]
    for i in range(len(out) - 1):
        if rng.random() < reorder:
            j = min(len(out) - 1, i + rng.randint(1, 6))
            out[i], out[j] = out[j], out[i]
    if rng.random() < 0.3 and out:  # a duplicate
        i = rng.randrange(len(out))
        out.insert(rng.randrange(len(out)), out[i])
    return out


def with_ops(rng: random.Random, packets: list, selectors: int, rate: float) -> list:
    steps = []
    for raw, marker, ts in packets:
        ops = []
        for which in range(selectors):
            if rng.random() < rate:
                if rng.random() < 0.1:
                    ops.append((which, 1, 0, 0))
                else:
                    ops.append((which, 0, rng.randint(0, 3), rng.choice([0, 1, 2, 7])))
        steps.append((raw, marker, ts, ops))
    return steps


# -- the Python side, driven as dd_run drives C ---------------------------------------------------


def canonical(raw: bytes, structure: DependencyStructure | None) -> bool:
    try:
        dd = ddw.parse(raw, structure)
    except DdError:
        return True  # never forwarded
    used = dd.structure or structure
    assert used is not None
    attached_off_start = dd.structure is not None and not dd.start_of_frame
    return not attached_off_start and ddw.serialize(dd, used) == raw


def run_python(selectors: int, steps: list) -> tuple[list, list[int]]:
    """Rows as dd_run's, up to Python's first exception; and the packets whose descriptor was
    not canonical (where only the meaning of the rewritten descriptor is compared)."""
    reader, p = DdReader(), DdPacket()
    sels = [DdSelector() for _ in range(selectors)]
    rows, loose = [], []
    for index, (raw, marker, ts, ops) in enumerate(steps):
        for which, op, a, b in ops:
            if op == 0:
                sels[which].set_target(a, b)
            else:
                sels[which].reset()
        if not canonical(raw, reader.structure):
            loose.append(index)
        valid = reader.read(raw, p)
        results = []
        try:
            for s in sels:
                m = s.select(p, marker, ts)
                desc = written = None
                if m >= 0:
                    desc = s.descriptor_bytes(p)
                    out = ddw.parse(desc, p.structure)
                    written = (out.frame_number, out.active_decode_targets)
                results.append((m, desc, written, int(s.needs_keyframe()), int(s.started)))
        except (IndexError, DdError):  # a structure attached off a frame's start (dd.h)
            return rows, loose
        if valid:
            dd = p.descriptor
            assert dd is not None
            row = (1, p.frame, dd.spatial_id, dd.temporal_id, p.structure_frame, p.publisher_mask)
        else:
            row = (0, None, None, None, None, None)
        rows.append((*row, reader.errors, results))
    return rows, loose


def meaning(raw: bytes, structure: DependencyStructure | None) -> tuple:
    dd = ddw.parse(raw, structure)
    return (
        dd.start_of_frame,
        dd.end_of_frame,
        dd.template_id,
        dd.frame_number,
        dd.dtis,
        dd.fdiffs,
        dd.chain_diffs,
        dd.active_decode_targets,
        dd.structure,
    )


def compare_runs(selectors: int, steps: list) -> int:
    expected, loose = run_python(selectors, steps)
    got = native.dd_run(selectors, steps)
    assert len(got) == len(steps)
    got = [(*row[:7], [tuple(r) for r in row[7]]) for row in got]
    structure = None
    reader = DdReader()
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        structure = reader.structure
        reader.read(steps[index][0], DdPacket())
        if index in loose:  # the same decisions; the descriptors mean the same
            assert want[:7] == have[:7], index
            for w, h in zip(want[7], have[7], strict=True):
                assert (w[0], w[2], w[3], w[4]) == (h[0], h[2], h[3], h[4]), index
                if w[1] is not None:
                    assert h[1] is not None
                    assert meaning(h[1], reader.structure or structure) == meaning(
                        w[1], reader.structure or structure
                    ), index
            continue
        assert want == have, (index, steps[index][0].hex())
    return len(expected)


# -- tests: known answers -------------------------------------------------------------------------


def test_rewrite_known_bytes() -> None:
    # Mandatory fields only, then a 2-target mask: flags 01000, mask 11, zero padding.
    assert native.dd_rewrite(b"\x80\x00\x01", 0x1234, 1, 0b11, 2, 64) == b"\x80\x12\x34\x46"
    assert native.dd_rewrite(b"\x80\x00\x01\x46", 0x0102, 0, 0, 2, 64) == b"\x80\x01\x02"
    assert native.dd_rewrite(b"\x80\x00\x01\x46", 7, 1, 0b01, 2, 64) == b"\x80\x00\x07\x42"
    assert native.dd_rewrite(b"\x80\x00\x01", 1, 1, 3, 2, 3) is None  # no room
    assert native.dd_rewrite(b"\x80\x00", 1, 0, 0, 2, 64) is None  # malformed


def test_parse_of_the_l3t3_key_fixture() -> None:
    first = native.dd_parse_fields(FIXTURE_DDS[0], None)
    assert first is not None
    structure = first[11]
    _, dt_count, chain_count, protected_by, _, resolutions = structure[:6]
    assert (dt_count, chain_count) == (9, 3)
    assert protected_by == (0, 0, 0, 1, 1, 1, 2, 2, 2)
    assert resolutions == [(320, 180), (640, 360), (1280, 720)]
    assert structure[6] == [(s, t) for s in range(3) for t in range(3)]
    assert structure[7] == (8, 7, 6, 5, 4, 3, 2, 1, 0)  # highest layer first
    for raw in FIXTURE_DDS:
        assert_parse_agrees(raw, FIXTURE_DDS[0])
    assert native.dd_parse_fields(FIXTURE_DDS[2], None) is None  # no structure yet
    assert native.dd_parse_fields(FIXTURE_DDS[0][:20], None) is None  # truncated


def test_an_l1t3_subscriber_at_t0_gets_the_t0_frames_each_ending_a_unit() -> None:
    shape = Shape(1, 3, False, True, 0, False)
    packets = build_stream(random.Random(1), [shape], 12)
    steps = [
        (raw, m, ts, [(0, 0, 0, 0)] if i == 0 else []) for i, (raw, m, ts) in enumerate(packets)
    ]
    rows = native.dd_run(1, steps)
    forwarded = [row for row in rows if row[7][0][0] >= 0]
    assert forwarded and {row[3] for row in forwarded} == {0}
    assert {row[3] for row in rows} == {0, 1, 2}
    # Every T0 frame is forwarded, and the last packet of each carries the marker.
    ends = [row[7][0][0] for row, (raw, _, _) in zip(rows, packets, strict=True) if raw[0] & 0x40]
    assert ends.count(0x80) == len([1 for row in rows if row[3] == 0 and row[7][0][0] == 0x80])
    assert all(e in (-1, 0x80) for e in ends)
    assert compare_runs(1, steps) == len(steps)


def test_frame_numbers_continue_across_a_reset() -> None:
    shape = Shape(2, 2, True, True, 5, True)
    packets = build_stream(random.Random(7), [shape], 30)
    keys = [i for i, (raw, _, _) in enumerate(packets) if len(raw) > 3 and raw[3] & 0x80]
    assert len(keys) >= 2
    steps = [(raw, m, ts, []) for raw, m, ts in packets]
    # At a frame's start: the rest of a frame decided before is still forwarded.
    reset_at = max(i for i in range(keys[1] - 1) if packets[i][0][0] & 0x80)
    steps[reset_at] = (*steps[reset_at][:3], [(0, 1, 0, 0)])
    rows = native.dd_run(1, steps)
    before = [row[7][0][2][0] for row in rows[:reset_at] if row[7][0][2] is not None]
    after = [row[7][0][2][0] for row in rows[reset_at:] if row[7][0][2] is not None]
    assert before and after and after[0] == (before[-1] + 1) & 0xFFFF
    assert all(row[7][0][0] == -1 for row in rows[reset_at : keys[1]])
    assert compare_runs(1, steps) == len(steps)


# -- tests: differential ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(SHAPES, min_size=1, max_size=3),
    seed=st.integers(0, 2**32),
    units=st.integers(4, 60),
    loss=st.sampled_from([0.0, 0.0, 0.03, 0.2]),
    reorder=st.sampled_from([0.0, 0.0, 0.02, 0.1]),
    rate=st.sampled_from([0.0, 0.01, 0.05]),
)
def test_streams_decide_and_rewrite_as_python(
    shapes: list[Shape], seed: int, units: int, loss: float, reorder: float, rate: float
) -> None:
    rng = random.Random(seed)
    packets = network(rng, build_stream(rng, shapes, units), loss, reorder)
    selectors = rng.randint(1, 4)
    steps = with_ops(rng, packets, selectors, rate)
    for which in range(selectors):  # each subscriber starts somewhere
        steps[0][3].append((which, 0, rng.randint(0, 3), rng.choice([0, 1, 2, 7])))
    assert compare_runs(selectors, steps) == len(steps)


def mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        what = rng.randrange(5)
        if what == 0 and data:
            i = rng.randrange(len(data) * 8)
            data[i // 8] ^= 0x80 >> (i % 8)
        elif what == 1:
            del data[rng.randrange(len(data) + 1) :]
        elif what == 2:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif what == 3 and len(data) > 3:
            data[3 + rng.randrange(len(data) - 3)] = rng.randrange(256)
        else:
            data[0:1] = bytes([rng.randrange(256)])
    return bytes(data)


@settings(max_examples=60, deadline=None)
@given(shapes=st.lists(SHAPES, min_size=1, max_size=2), seed=st.integers(0, 2**32))
def test_mutated_streams_decide_as_python(shapes: list[Shape], seed: int) -> None:
    rng = random.Random(seed)
    packets = build_stream(rng, shapes, rng.randint(4, 30))
    packets = [(mutate(rng, raw) if rng.random() < 0.15 else raw, m, ts) for raw, m, ts in packets]
    steps = with_ops(rng, packets, 2, 0.03)
    compare_runs(2, steps)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=60), known=st.sampled_from([None, 0, 1]))
def test_garbage_parses_as_python(data: bytes, known: int | None) -> None:
    structure_raw = None if known is None else [FIXTURE_DDS[0], GENERATED_KEY][known]
    assert_parse_agrees(data, structure_raw)
    for dt_count in (1, 9, 32):
        native.dd_rewrite(data, 77, 1, 0xFFFFFFFF, dt_count, 300)  # never crashes
        native.dd_rewrite(data, 77, 0, 0, dt_count, 5)


GENERATED_KEY = ddw.serialize(
    DependencyDescriptor(
        True, True, 3, 9, structure=make_structure(Shape(2, 3, False, True, 3, True))
    ),
    make_structure(Shape(2, 3, False, True, 3, True)),
)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), shape=SHAPES)
def test_mutated_descriptors_parse_as_python(seed: int, shape: Shape) -> None:
    rng = random.Random(seed)
    packets = build_stream(rng, [shape], 6)
    key = packets[0][0]
    for raw, _, _ in rng.sample(packets, min(6, len(packets))):
        changed = mutate(rng, raw)
        assert_parse_agrees(raw, key)
        assert_parse_agrees(changed, key)
        assert_parse_agrees(changed, None)


@st.composite
def structures(draw: st.DrawFn, fdiff_limit: int = MAX_FDIFFS) -> DependencyStructure:
    dt_count = draw(st.integers(1, 32))
    chain_count = draw(st.integers(0, dt_count))
    layers = []
    s = t = 0
    for _ in range(draw(st.integers(1, 64))):
        layers.append((s, t))
        step = draw(st.integers(0, 2))
        if step == 1 and t < 7:
            t += 1
        elif step == 2 and s < 7:
            s, t = s + 1, 0
    templates = [
        FrameTemplate(
            s,
            t,
            tuple(draw(st.lists(st.integers(0, 3), min_size=dt_count, max_size=dt_count))),
            tuple(draw(st.lists(st.integers(1, 16), max_size=fdiff_limit))),
            tuple(draw(st.lists(st.integers(0, 15), min_size=chain_count, max_size=chain_count))),
        )
        for s, t in layers
    ]
    last_spatial = layers[-1][0]
    return DependencyStructure(
        draw(st.integers(0, 63)),
        dt_count,
        templates,
        chain_count,
        draw(st.lists(st.integers(0, chain_count - 1), min_size=dt_count, max_size=dt_count))
        if chain_count
        else [],
        draw(
            st.none()
            | st.lists(
                st.tuples(st.integers(1, 65536), st.integers(1, 65536)),
                min_size=last_spatial + 1,
                max_size=last_spatial + 1,
            )
        ),
    )


@st.composite
def descriptors(
    draw: st.DrawFn, structure: DependencyStructure, fdiff_limit: int = MAX_FDIFFS
) -> DependencyDescriptor:
    n = len(structure.templates)
    custom_dtis, custom_fdiffs, custom_chains = draw(st.tuples(*[st.booleans()] * 3))
    dt_count = structure.decode_target_count
    return DependencyDescriptor(
        start_of_frame=draw(st.booleans()),
        end_of_frame=draw(st.booleans()),
        template_id=(structure.template_id_offset + draw(st.integers(0, n - 1))) % 64,
        frame_number=draw(st.integers(0, 0xFFFF)),
        dtis=tuple(draw(st.lists(st.integers(0, 3), min_size=dt_count, max_size=dt_count))),
        fdiffs=tuple(draw(st.lists(st.integers(1, 4096), max_size=fdiff_limit))),
        chain_diffs=tuple(
            draw(
                st.lists(
                    st.integers(0, 255),
                    min_size=structure.chain_count,
                    max_size=structure.chain_count,
                )
            )
        ),
        structure=structure if draw(st.booleans()) else None,
        active_decode_targets=draw(st.none() | st.integers(0, structure.all_targets)),
        custom_dtis=custom_dtis,
        custom_fdiffs=custom_fdiffs,
        custom_chains=custom_chains,
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_written_descriptors_parse_and_rewrite_as_python(data: st.DataObject) -> None:
    structure = data.draw(structures())
    dd = data.draw(descriptors(structure))
    raw = ddw.serialize(dd, structure)
    key = ddw.serialize(
        DependencyDescriptor(True, True, structure.template_id_offset, 0, structure=structure),
        structure,
    )
    assert_parse_agrees(raw, key)
    number = data.draw(st.integers(0, 0xFFFF))
    mask = data.draw(st.none() | st.integers(0, structure.all_targets))
    want = ddw.serialize(replace(dd, frame_number=number, active_decode_targets=mask), structure)
    dt_count = structure.decode_target_count
    got = native.dd_rewrite(raw, number, mask is not None, mask or 0, dt_count, 8192)
    assert got == want, (raw.hex(), number, mask, dt_count, want.hex())
    if len(want) > 3:
        assert (
            native.dd_rewrite(raw, number, mask is not None, mask or 0, dt_count, len(want) - 1)
            is None
        )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_more_fdiffs_than_c_holds_are_rejected(data: st.DataObject) -> None:
    structure = data.draw(structures(fdiff_limit=24))
    dd = data.draw(descriptors(structure, fdiff_limit=24))
    dd.structure = structure
    raw = ddw.serialize(dd, structure)
    assert_parse_agrees(raw, None)  # rejected exactly when a list is longer than C's arrays
    native.dd_rewrite(raw, 1, 1, 1, structure.decode_target_count, 1000)
    native.dd_run(1, [(raw, 0, 0, []), (raw[:3], 0x80, 0, [])])


def test_structure_limits_are_pythons() -> None:
    """64 templates and layer ids up to 7 are accepted; one more template, or id 8, is not."""

    def key(layers: list[tuple[int, int]]) -> bytes:
        templates = [FrameTemplate(s, t, (ddw.SWITCH,), (), ()) for s, t in layers]
        structure = DependencyStructure(0, 1, templates)
        return ddw.serialize(DependencyDescriptor(True, True, 0, 1, structure=structure), structure)

    full = key([(0, 0)] * 64)
    assert native.dd_parse_fields(full, None) is not None
    assert_parse_agrees(full, None)
    for bad in ([(0, 0)] * 65, [(0, t) for t in range(9)], [(s, 0) for s in range(9)]):
        assert native.dd_parse_fields(key(bad), None) is None
        assert_parse_agrees(key(bad), None)
    top = key([*((0, t) for t in range(8)), *((s, 0) for s in range(1, 8))])
    assert native.dd_parse_fields(top, None) is not None
    assert_parse_agrees(top, None)
