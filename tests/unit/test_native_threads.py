"""The native engine with its fan-out split over sender threads (native/senders.h): every
subscriber gets every packet in order whichever sender owns it, and Python may add, remove and
steer downtracks, transports and uptracks while packets flow. Waits are socket reads with a
timeout, never sleeps."""

from __future__ import annotations

import random
import select
import socket
import struct
from collections.abc import Iterator

import pylibsrtp
import pytest

from roomcast.media.native_plane import native_module

from .test_native_engine import (
    PUB_SSRC,
    SUB_PT,
    SUB_SSRC,
    TIMEOUT,
    VP8_PT,
    Peer,
    peer,
)

native, why = native_module()
pytestmark = pytest.mark.skipif(native is None, reason=f"native plane not built: {why}")

LAST = 0xFFFF  # the payload's tag of the final packet


@pytest.fixture(params=[1, 2, 3], ids=["1-sender", "2-senders", "3-senders"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[object, socket.socket, int]]:
    assert native is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    # The publisher here sends as fast as Python can: room for it while a table change holds
    # the receive thread.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
    eng = native.Engine(sock.fileno(), request.param)
    eng.start()
    yield eng, sock, request.param
    eng.stop()
    sock.close()


def tagged_packet(seq: int, tag: int) -> bytes:
    """A VP8 keyframe (any downtrack starts on it) whose payload carries `tag`."""
    header = struct.pack("!BBHII", 0x80, 0x80 | VP8_PT, seq & 0xFFFF, seq * 3000, PUB_SSRC)
    descriptor = bytes([0x90, 0x80, 0x80, 0x05])
    return header + descriptor + b"\x00" + struct.pack("!H", tag) + b"x" * 60


def new_uptrack(eng: object, publisher: Peer) -> int:
    kinds = bytearray(128)
    kinds[VP8_PT] = 2
    rates = [0] * 128
    rates[VP8_PT] = 90000
    uptrack = eng.add_uptrack(True, 1, bytes(kinds), rates, 512)  # type: ignore[attr-defined]
    eng.bind_ssrc(publisher.transport, PUB_SSRC, uptrack, 0)  # type: ignore[attr-defined]
    return uptrack


def new_downtrack(eng: object, uptrack: int, subscriber: Peer) -> int:
    pt_map = bytearray([255] * 128)
    pt_map[VP8_PT] = SUB_PT
    downtrack = eng.add_downtrack(  # type: ignore[attr-defined]
        uptrack, subscriber.transport, SUB_SSRC, bytes(pt_map), bytes(256)
    )
    eng.control(downtrack, 0, -2, False)  # type: ignore[attr-defined]
    return downtrack


def subscriber(eng: object) -> Peer:
    sub = peer(eng)
    sub.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    return sub


def drain_until_last(sub: Peer) -> tuple[set[int], list[int]]:
    """What the engine forwarded to `sub` up to the final packet: the distinct rewritten
    sequence numbers (a retransmission repeats one) and the tags in arrival order."""
    seqs: set[int] = set()
    tags: list[int] = []
    while True:
        ready, _, _ = select.select([sub.sock], [], [], TIMEOUT)
        assert ready, f"transport {sub.transport}: the final packet never came"
        data = sub.sock.recv(4096)
        try:
            plain = sub.rx.unprotect(data)
        except pylibsrtp.Error:  # a retransmission's replayed SRTP index
            continue
        seq, ssrc = struct.unpack_from("!H4xI", plain, 2)
        if ssrc != SUB_SSRC or seq in seqs:  # Python's own packet, or a retransmission
            continue
        seqs.add(seq)
        tag = struct.unpack_from("!H", plain, 17)[0]
        tags.append(tag)
        if tag == LAST:
            return seqs, tags


def test_every_subscriber_gets_every_packet_in_order(engine: tuple) -> None:
    eng, sock, threads = engine
    address = sock.getsockname()
    pub = peer(eng)
    uptrack = new_uptrack(eng, pub)
    subs = [subscriber(eng) for _ in range(7)]
    downs = [new_downtrack(eng, uptrack, sub) for sub in subs]
    for n in range(200):
        pub.send_rtp(tagged_packet(n, n), address)
    pub.send_rtp(tagged_packet(200, LAST), address)
    for sub, down in zip(subs, downs, strict=True):
        _, tags = drain_until_last(sub)
        assert tags == [*range(200), LAST]
        assert eng.downtrack_state(down)[1] == 201  # packets_sent
    counters = eng.counters()
    assert counters["threads"] == threads
    assert counters["forwarded"] == 7 * 201
    assert counters["queue_dropped"] == 0
    # With sender threads, each packet went to every sender (7 transports on 2 or 3): handed
    # to it, or forwarded for it by the receive thread while it was idle and the load light.
    handled = counters["queued"] + counters["inlined"]
    assert handled == (201 * min(threads, 7) if threads > 1 else 0)


def test_tables_change_while_packets_flow(engine: tuple) -> None:
    """Downtracks, subscriber transports and the uptrack come and go between packets, with
    control, state reads, retransmissions and Python's own RTP mixed in; the engine keeps
    forwarding, and every subscriber left gets exactly what its downtrack counted."""
    eng, sock, _ = engine
    address = sock.getsockname()
    rng = random.Random(18)
    pub = peer(eng)
    uptrack = new_uptrack(eng, pub)
    live: dict[int, Peer] = {}  # downtrack -> its subscriber
    spare: list[Peer] = []  # transports whose downtrack went
    for _ in range(4):
        sub = subscriber(eng)
        live[new_downtrack(eng, uptrack, sub)] = sub
    for n in range(1500):
        pub.send_rtp(tagged_packet(n, n & 0x7FFF), address)
        action = rng.randrange(10)
        if action == 0:
            sub = subscriber(eng)
            live[new_downtrack(eng, uptrack, sub)] = sub
        elif action == 1 and live:
            down = rng.choice(list(live))
            eng.remove_downtrack(down)
            spare.append(live.pop(down))
        elif action == 2 and spare:
            gone = spare.pop(rng.randrange(len(spare)))
            eng.remove_transport(gone.transport)
            gone.sock.close()
        elif action == 3 and live:
            down = rng.choice(list(live))
            state = eng.downtrack_state(down)
            eng.control(down, 0, -2, False)
            eng.retransmit(down, [(state[10] + n) & 0xFFFF])  # seq_offset + a recent seq
        elif action == 4 and live:
            eng.send_rtp(live[rng.choice(list(live))].transport, tagged_packet(n, 0x7FFF))
        elif action == 6 and live and n % 7 == 0:
            # Its transport goes first: the downtrack's packets come up to Python (EV_SEND).
            down = rng.choice(list(live))
            gone = live.pop(down)
            eng.remove_transport(gone.transport)
            gone.sock.close()
            if n % 2:
                eng.remove_downtrack(down)
        elif action == 5 and n % 300 == 5:
            # The uptrack goes and a new one takes its SSRC: queued jobs of the old one are
            # dropped by the senders (its serial), the old downtracks are gone with it.
            eng.remove_uptrack(uptrack)
            spare.extend(live.values())
            live.clear()
            uptrack = new_uptrack(eng, pub)
        eng.events()
    last = subscriber(eng)  # at least one waits for the final packet
    live[new_downtrack(eng, uptrack, last)] = last
    pub.send_rtp(tagged_packet(1500, LAST), address)
    for down, sub in live.items():
        seqs, _ = drain_until_last(sub)
        assert len(seqs) == eng.downtrack_state(down)[1]  # packets_sent
    counters = eng.counters()
    assert counters["queue_dropped"] == 0
    assert counters["protect_failed"] == 0 and counters["send_failed"] == 0
    assert counters["rtp_in"] == 1501, counters
    for sub in [*live.values(), *spare]:
        sub.sock.close()


def test_stop_and_start_again(engine: tuple) -> None:
    """stop() joins every thread and drops what was queued; start() runs them again."""
    eng, sock, _ = engine
    address = sock.getsockname()
    pub, sub = peer(eng), subscriber(eng)
    down = new_downtrack(eng, new_uptrack(eng, pub), sub)
    eng.stop()
    eng.stop()  # twice: nothing to do
    eng.start()
    pub.send_rtp(tagged_packet(1, LAST), address)
    _, tags = drain_until_last(sub)
    assert tags == [LAST] and eng.downtrack_state(down)[1] == 1


def four_subscribers(eng: object) -> tuple[Peer, list[Peer]]:
    """A publisher's track forwarded to four subscribers (on every sender, up to four)."""
    pub = peer(eng)
    uptrack = new_uptrack(eng, pub)
    subs = [subscriber(eng) for _ in range(4)]
    for sub in subs:
        new_downtrack(eng, uptrack, sub)
    return pub, subs


def test_light_load_is_forwarded_by_the_receive_thread(engine: tuple) -> None:
    """One packet at a time (each batch is one datagram, the senders idle): the receive thread
    forwards for every sender itself, under its lock, instead of waking it (a hand-off per
    packet cost more than the forwarding at low rates: bench.compare, fan-out 10)."""
    eng, sock, threads = engine
    address = sock.getsockname()
    pub, subs = four_subscribers(eng)
    for n in range(20):
        pub.send_rtp(tagged_packet(n, LAST), address)
        for sub in subs:  # every subscriber has it before the next one goes
            assert drain_until_last(sub)[1] == [LAST]
    counters = eng.counters()
    assert counters["forwarded"] == 4 * 20
    assert counters["queued"] == 0
    assert counters["inlined"] == (20 * min(threads, 4) if threads > 1 else 0)


def test_a_backlog_is_handed_to_the_senders(engine: tuple) -> None:
    """Datagrams waiting when the receive thread reads (a full batch): the senders get them,
    so that one room's fan-out uses every core, and every packet arrives in order."""
    eng, sock, threads = engine
    address = sock.getsockname()
    pub, subs = four_subscribers(eng)
    eng.stop()  # the datagrams wait in the socket meanwhile
    for n in range(100):
        pub.send_rtp(tagged_packet(n, n), address)
    pub.send_rtp(tagged_packet(100, LAST), address)
    eng.start()
    for sub in subs:
        assert drain_until_last(sub)[1] == [*range(100), LAST]
    counters = eng.counters()
    assert counters["queue_dropped"] == 0
    if threads > 1:  # the first batch at least (64 datagrams) went to the senders
        assert counters["queued"] >= 64 * min(threads, 4)
        assert counters["queued"] + counters["inlined"] == 101 * min(threads, 4)
