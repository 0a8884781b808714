"""The native plane's VP9 SVC pieces (native/svc.h) against the Python plane's, through the
binding (native/svc_binding.h): the payload descriptor (media/vp9.py Vp9Descriptor), the
per-subscriber layer choice (Vp9Selector) and the sequence numbers of what is sent
(media/svc_downtrack.py SequenceMunger). Hypothesis feeds both the same VP9 SVC streams
(every L1T1..L3T3 mode, _KEY or not, flexible or not, with loss, reordering, duplicates and
target changes anywhere) and garbage; they must agree at every step."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media.native_plane import native_module
from roomcast.media.rtp import parse_rtp
from roomcast.media.svc_downtrack import SequenceMunger
from roomcast.media.vp9 import MAX_TEMPORAL, Vp9Descriptor, Vp9Selector

native, why = native_module()
pytestmark = pytest.mark.skipif(native is None, reason=f"native plane not built: {why}")

FIXTURE = Path(__file__).parent / "fixtures" / "vp9_l3t3_key.rtp.hex"

PACKET, TARGET, RESET = 0, 1, 2  # vp9_run ops
START, NUMBER, INIT = 0, 1, 2  # munger_run ops


# -- the Python side, shaped as the binding answers ---------------------------------------------


def py_fields(data: bytes, start: int = 0, end: int | None = None) -> tuple[int | bool, ...]:
    d = Vp9Descriptor()
    ok = d.parse(data, start, len(data) if end is None else end)
    return (
        ok,
        d.header_size,
        d.picture_id,
        int(d.inter_picture),
        int(d.flexible),
        int(d.begin),
        int(d.end),
        d.temporal_id,
        int(d.switching_up),
        d.spatial_id,
        int(d.inter_layer),
        d.tl0picidx,
        int(d.keyframe),
    )


def py_vp9_run(ops: list[tuple]) -> list[tuple[int, ...]]:
    """What mod_vp9_run does, with media/vp9.py: parse, then select whatever parse said (as
    svc_layers.py and SvcDownTrack.forward do)."""
    s, d = Vp9Selector(), Vp9Descriptor()
    out = []
    for op in ops:
        result = 0
        if op[0] == PACKET:
            d.parse(op[1], 0, len(op[1]))
            result = s.select(d, op[2])
        elif op[0] == TARGET:
            s.set_target(op[1], op[2])
        else:
            s.reset()
        out.append(
            (
                result,
                int(s.needs_keyframe()),
                int(s.started),
                s.target_spatial,
                s.target_temporal,
                s.limit_spatial,
                s.limit_temporal,
                s.current_spatial,
                s.current_temporal,
            )
        )
    return out


def py_munger_run(ops: list[tuple]) -> tuple[list[int | None], int, int, list[int], list[int]]:
    m = SequenceMunger()
    results: list[int | None] = []
    for op in ops:
        if op[0] == START:
            m.start(op[1], op[2])
            results.append(None)
        elif op[0] == NUMBER:
            results.append(m.number(op[1], bool(op[2])))
        else:
            m = SequenceMunger()
            results.append(None)
    return results, m.highest, m.next_out, m.tags, m.reserved


def check_vp9(ops: list[tuple]) -> list[tuple[int, ...]]:
    got = native.vp9_run(ops)
    want = py_vp9_run(ops)
    for step, (op, g, w) in enumerate(zip(ops, got, want, strict=True)):
        assert g == w, (step, op)
    return got


def check_munger(ops: list[tuple]) -> list[int | None]:
    got = native.munger_run(ops)
    want = py_munger_run(ops)
    assert got[0] == want[0]
    assert got[1:] == want[1:]
    return got[0]


# -- VP9 SVC streams (RFC 9628 §4.2) ------------------------------------------------------------

PATTERNS = {1: [0], 2: [0, 1], 3: [0, 2, 1, 2]}  # temporal id of each picture of a group


def descriptor(
    *,
    picture_id: int | None,
    long_id: bool,
    layers: tuple[int, int, int, int] | None,  # tid, u, sid, d
    tl0picidx: int,
    flexible: bool,
    inter: bool,
    begin: bool,
    end: bool,
    p_diffs: list[int],
    ss: bytes | None,
) -> bytes:
    b0 = (
        (0x80 if picture_id is not None else 0)
        | (0x40 if inter else 0)
        | (0x20 if layers else 0)
        | (0x10 if flexible else 0)
        | (0x08 if begin else 0)
        | (0x04 if end else 0)
        | (0x02 if ss is not None else 0)
    )
    out = bytearray([b0])
    if picture_id is not None:
        out += struct.pack("!H", 0x8000 | picture_id) if long_id else bytes([picture_id & 0x7F])
    if layers:
        tid, u, sid, d = layers
        out.append(tid << 5 | u << 4 | sid << 1 | d)
        if not flexible:
            out.append(tl0picidx)
    if flexible and inter:
        for n, diff in enumerate(p_diffs):
            out.append(diff << 1 | (1 if n < len(p_diffs) - 1 else 0))
    if ss is not None:
        out += ss
    return bytes(out)


def scalability_structure(rng: random.Random, spatial: int, temporal: int) -> bytes:
    """§4.2.1: N_S, Y with each layer's size, G with the picture group."""
    y, g = rng.random() < 0.8, rng.random() < 0.7
    out = bytearray([(spatial - 1) << 5 | (0x10 if y else 0) | (0x08 if g else 0)])
    if y:
        for s in range(spatial):
            out += struct.pack("!HH", 320 << s, 180 << s)
    if g:
        pattern = PATTERNS[temporal]
        out.append(len(pattern))
        for tid in pattern:
            refs = rng.randint(0, 3)
            out.append(tid << 5 | (1 if tid else 0) << 4 | refs << 2)
            out += bytes(rng.randint(1, 8) for _ in range(refs))
    return bytes(out)


@dataclass
class Mode:
    spatial: int
    temporal: int
    key: bool  # LxTy_KEY: upper spatial layers predict from the lower one only on keyframes
    flexible: bool


def vp9_stream(rng: random.Random, mode: Mode, pictures: int) -> list[tuple[bytes, int]]:
    """(payload, marker) of each packet of `pictures` pictures, in sending order."""
    packets: list[tuple[bytes, int]] = []
    picture_id = rng.randrange(0x8000)
    long_id = rng.random() < 0.8
    with_id = rng.random() < 0.95
    tl0picidx = rng.randrange(256)
    pattern = PATTERNS[mode.temporal]
    phase = 0
    for k in range(pictures):
        keyframe = k == 0 or rng.random() < 0.07
        if keyframe:
            phase = 0
        tid = pattern[phase % len(pattern)]
        phase += 1
        if tid == 0:
            tl0picidx = (tl0picidx + 1) & 0xFF
        u = int(tid > 0 and rng.random() < 0.5)
        layers = mode.spatial if rng.random() < 0.93 else rng.randint(1, mode.spatial)
        for sid in range(layers):
            # Upper layers sometimes predict only from the layer below (a switching-up point).
            inter = not keyframe and not (sid > 0 and rng.random() < 0.08)
            d = int(sid > 0 and (keyframe or not inter or not mode.key))
            count = rng.randint(1, 3)
            p_diffs = [rng.randint(1, 4) for _ in range(rng.randint(1, 3))]
            for j in range(count):
                begin, end = j == 0, j == count - 1
                ss = None
                if keyframe and sid == 0 and begin and rng.random() < 0.9:
                    ss = scalability_structure(rng, mode.spatial, mode.temporal)
                header = descriptor(
                    picture_id=(picture_id if long_id else picture_id & 0x7F) if with_id else None,
                    long_id=long_id,
                    layers=(tid, u, sid, d) if mode.spatial > 1 or mode.temporal > 1 else None,
                    tl0picidx=tl0picidx,
                    flexible=mode.flexible,
                    inter=inter,
                    begin=begin,
                    end=end,
                    p_diffs=p_diffs,
                    ss=ss,
                )
                body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 4)))
                packets.append((header + body, 0x80 if end and sid == layers - 1 else 0))
        picture_id = (picture_id + 1) & 0x7FFF
    return packets


def mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    kind = rng.randrange(3)
    if kind == 0 and data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del data[rng.randrange(len(data) + 1) :]
    else:
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    return bytes(data)


def network(
    rng: random.Random, packets: list[tuple[bytes, int]], base: int, loss: float, reorder: float
) -> list[tuple[int, bytes, int]]:
    """Sequence numbers from `base` (wrapping), then loss, duplicates, reordering and the odd
    damaged payload."""
    numbered = [((base + n) & 0xFFFF, p, m) for n, (p, m) in enumerate(packets)]
    out: list[tuple[int, bytes, int]] = []
    for seq, payload, marker in numbered:
        r = rng.random()
        if r < loss:
            continue
        if r < loss + 0.02:
            out.append((seq, payload, marker))  # duplicated
        if rng.random() < 0.01:
            payload = mutate(rng, payload)
        out.append((seq, payload, marker))
    for n in range(len(out) - 1):
        if rng.random() < reorder:
            step = rng.randint(1, min(5, len(out) - 1 - n))
            out[n], out[n + step] = out[n + step], out[n]
    return out


modes = st.builds(
    Mode,
    spatial=st.integers(1, 3),
    temporal=st.integers(1, 3),
    key=st.booleans(),
    flexible=st.booleans(),
)
targets = st.tuples(
    st.integers(-1, 4), st.one_of(st.integers(-1, 3), st.just(MAX_TEMPORAL), st.integers(4, 8))
)


def with_control(
    rng: random.Random, packets: list[tuple[int, bytes, int]], changes: float, resets: float
) -> list[tuple]:
    """vp9_run ops: the packets, with target changes and resets between any two."""
    ops: list[tuple] = []
    for _, payload, marker in packets:
        if rng.random() < changes:
            ops.append((TARGET, rng.randint(-1, 4), rng.choice([0, 1, 2, 3, MAX_TEMPORAL, 8, -1])))
        if rng.random() < resets:
            ops.append((RESET,))
        ops.append((PACKET, payload, marker))
    return ops


# -- differential tests -------------------------------------------------------------------------


@settings(max_examples=400)
@given(
    mode=modes,
    seed=st.integers(0, 2**32),
    pictures=st.integers(1, 40),
    first_target=targets,
    base=st.one_of(st.integers(0, 0xFFFF), st.integers(0xFFF0, 0xFFFF)),
    loss=st.sampled_from([0.0, 0.0, 0.03, 0.15]),
    reorder=st.sampled_from([0.0, 0.0, 0.02, 0.1]),
    changes=st.sampled_from([0.0, 0.02, 0.1, 0.5]),
    resets=st.sampled_from([0.0, 0.0, 0.01]),
)
def test_vp9_streams_select_and_number_alike(
    mode: Mode,
    seed: int,
    pictures: int,
    first_target: tuple[int, int],
    base: int,
    loss: float,
    reorder: float,
    changes: float,
    resets: float,
) -> None:
    rng = random.Random(seed)
    arrived = network(rng, vp9_stream(rng, mode, pictures), base, loss, reorder)
    for _, payload, _ in arrived:
        assert native.vp9_parse_fields(payload) == py_fields(payload)
    ops = [(TARGET, *first_target), *with_control(rng, arrived, changes, resets)]
    rows = check_vp9(ops)
    # The numbers SvcDownTrack.forward gives what the selector kept.
    sent = [row[0] >= 0 for op, row in zip(ops, rows, strict=True) if op[0] == PACKET]
    out_base = rng.randrange(0x10000)
    munger_ops = [(START, arrived[0][0], out_base)] if arrived else []
    munger_ops += [(NUMBER, seq, int(s)) for (seq, _, _), s in zip(arrived, sent, strict=True)]
    check_munger(munger_ops)


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32), changes=st.sampled_from([0.02, 0.2, 1.0]))
def test_the_captured_l3t3_key_stream_selects_alike(seed: int, changes: float) -> None:
    rng = random.Random(seed)
    packets = []
    for line in FIXTURE.read_text().splitlines():
        if line and not line.startswith("#"):
            packet = bytes.fromhex(line)
            header = parse_rtp(packet)
            payload = packet[header.payload_offset : header.payload_end]
            packets.append((header.sequence, payload, 0x80 if header.marker else 0))
    check_vp9(with_control(rng, packets, changes, 0.005))


@settings(max_examples=1500)
@given(st.binary(max_size=48), st.integers(0, 48), st.integers(0, 48))
def test_vp9_garbage_parses_alike(data: bytes, start: int, end: int) -> None:
    assert native.vp9_parse_fields(data) == py_fields(data)
    start, end = min(start, len(data)), min(end, len(data))
    assert native.vp9_parse_fields(data, start, end) == py_fields(data, start, end)


descriptor_heads = st.builds(
    lambda b0, rest: bytes([b0]) + rest, st.integers(0, 255), st.binary(max_size=30)
)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just(PACKET), descriptor_heads, st.sampled_from([0, 0x80])),
            st.tuples(st.just(TARGET), st.integers(-1, 8), st.integers(-1, 8)),
            st.tuples(st.just(RESET)),
        ),
        max_size=80,
    )
)
def test_vp9_garbage_streams_select_alike(ops: list[tuple]) -> None:
    check_vp9(ops)


def seq_walk(rng: random.Random, steps: int, start: int) -> list[tuple]:
    """munger_run ops: in order, gaps (some > MAX_GAP), late and duplicated packets, jumps,
    restarts; sent or not."""
    ops: list[tuple] = []
    seq = start
    seen: list[int] = []
    for _ in range(steps):
        r = rng.random()
        if r < 0.5:
            seq = (seq + 1) & 0xFFFF
        elif r < 0.65:
            seq = (seq + rng.choice([2, 3, 10, 255, 256, 257, 300])) & 0xFFFF
        elif r < 0.8 and seen:
            ops.append((NUMBER, rng.choice(seen[-300:]), rng.randint(0, 1)))  # late or duplicate
            continue
        elif r < 0.85:
            ops.append(
                (
                    NUMBER,
                    (seq - rng.choice([1, 2, 300, 1023, 1024, 1025, 0x7FFF])) & 0xFFFF,
                    rng.randint(0, 1),
                )
            )
            continue
        elif r < 0.9:
            seq = rng.randrange(0x10000)  # a restarted sender
        elif r < 0.93:
            seq = (seq + rng.choice([0x7FFF, 0x8000, 0x8001])) & 0xFFFF
        elif r < 0.96:
            ops.append((START, seq, rng.randrange(0x10000)))
            continue
        elif r < 0.97:
            ops.append((INIT,))
            continue
        seen.append(seq)
        ops.append((NUMBER, seq, int(rng.random() < 0.8)))
    return ops


@settings(max_examples=300)
@given(
    seed=st.integers(0, 2**32),
    steps=st.integers(0, 400),
    start=st.one_of(st.integers(0, 0xFFFF), st.integers(0xFF00, 0xFFFF)),
    started=st.booleans(),
)
def test_munger_walks_number_alike(seed: int, steps: int, start: int, started: bool) -> None:
    rng = random.Random(seed)
    ops = seq_walk(rng, steps, start)
    if started:
        ops.insert(0, (START, start, rng.randrange(0x10000)))
    check_munger(ops)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just(START), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
            st.tuples(st.just(NUMBER), st.integers(0, 0xFFFF), st.integers(0, 1)),
            st.tuples(st.just(INIT)),
        ),
        max_size=60,
    )
)
def test_munger_random_ops_number_alike(ops: list[tuple]) -> None:
    check_munger(ops)


# -- known answers ------------------------------------------------------------------------------


def test_vp9_descriptors_with_known_fields() -> None:
    fields = native.vp9_parse_fields
    # ok, size, picture id, P, F, B, E, TID, U, SID, D, TL0PICIDX, keyframe
    assert fields(b"\x8c\x05") == (True, 2, 5, 0, 0, 1, 1, 0, 0, 0, 0, -1, 1)
    # Non-flexible: 15-bit picture id, layers T2 U S1 D, TL0PICIDX.
    assert fields(b"\xe8\x81\x02\x53\x07\xff") == (True, 5, 0x102, 1, 0, 1, 0, 2, 1, 1, 1, 7, 0)
    # Flexible P: three P_DIFFs at most, whatever the third's N bit says.
    assert fields(b"\xd8\x05\x03\x03\x03\x03")[:2] == (True, 5)
    assert fields(b"\xd8\x05\x03\x02\xaa")[:2] == (True, 4)
    assert fields(b"\xd8\x05\x03\x03")[:2] == (False, 0)
    # Scalability structure: 3 layers with sizes, a group of one picture with 2 references.
    ss = bytes([0x58]) + bytes(12) + bytes([1, 0x08, 1, 2])
    assert fields(b"\x8a\x05" + ss)[:2] == (True, 2 + len(ss))
    assert fields(b"\x8a\x05" + ss[:-1]) == (False, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, -1, 0)
    assert fields(b"\x8a\x05" + ss[:12]) == (False, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, -1, 0)
    # Cut short before it: what was read stays (media/vp9.py does not clear there).
    assert fields(b"\xa8\x05") == (False, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, -1, 0)
    assert fields(b"") == (False, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, -1, 0)
    # Offsets: the descriptor at [1, 3) of a longer buffer.
    assert fields(b"\xff\x8c\x05\xff", 1, 3)[:3] == (True, 2, 5)
    with pytest.raises(ValueError):
        fields(b"\x8c\x05", 0, 3)


def l2t1(inter: bool) -> list[tuple]:
    """One picture of two spatial layers, one packet each."""
    p = 0x40 if inter else 0
    return [
        (PACKET, bytes([0xAC | p, 0x05, 0x00, 0x01]), 0),  # I L B E, S0, TL0PICIDX
        (PACKET, bytes([0xAC | p, 0x05, 0x03, 0x01]), 0x80),  # S1 D
    ]


def test_vp9_selector_known_answers() -> None:
    results = lambda ops: [row[0] for row in check_vp9(ops)]  # noqa: E731
    # Waits for a keyframe; then the low layer alone ends each picture.
    assert results([(TARGET, 0, 7), *l2t1(True), *l2t1(False), *l2t1(True)]) == [
        0, -1, -1, 0x80, -1, 0x80, -1,
    ]  # fmt: skip
    # Both layers: the marker stays where the publisher put it.
    assert results([(TARGET, 1, 7), *l2t1(False), *l2t1(True)]) == [0, 0, 0x80, 0, 0x80]
    # Up to S1 inside a picture: only from the next one, and only at a keyframe.
    rows = check_vp9([(TARGET, 0, 7), *l2t1(False), (TARGET, 1, 7), *l2t1(True)])
    assert [r[0] for r in rows] == [0, 0x80, -1, 0, 0x80, -1]
    assert rows[-1][1] == 1  # needs a keyframe
    # needs_keyframe, started: until S1 of a keyframe is taken; again after a reset.
    rows = check_vp9([(TARGET, 1, 7), *l2t1(False), (RESET,)])
    assert [r[1:3] for r in rows] == [(1, 0), (1, 1), (0, 1), (1, 0)]


def test_munger_known_answers() -> None:
    ops = [(START, 65534, 100), (NUMBER, 65534, 1), (NUMBER, 65535, 0), (NUMBER, 0, 1)]
    ops += [(NUMBER, 3, 1), (NUMBER, 2, 1), (NUMBER, 2, 1), (NUMBER, 1, 0)]
    ops += [(NUMBER, 65535, 1), (NUMBER, 1003, 1)]
    assert check_munger(ops) == [None, 100, -1, 101, 104, 103, -1, -1, -1, 105]
    # Before any start (never the case in SvcDownTrack): as SequenceMunger() numbers.
    assert check_munger([(NUMBER, 5, 1), (NUMBER, 2, 1), (NUMBER, 3, 1)]) == [4, 1, 2]


@pytest.mark.parametrize(
    "ops",
    [
        [None],
        [(3,)],
        [(0, "text", 0)],
        [(0, b"", 256)],
        [(1, 2**70, 0)],
        [(1, 0)],
        [(2, 0)],
        [()],
    ],
)
def test_bad_ops_raise(ops: list) -> None:
    with pytest.raises(ValueError):
        native.vp9_run(ops)
    with pytest.raises(ValueError):
        native.munger_run([(1, 70000, 1)] if ops[0] == (0, b"", 256) else ops)
    with pytest.raises(TypeError):
        native.vp9_run(tuple(ops))
