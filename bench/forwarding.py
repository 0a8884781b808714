"""Forwarding-plane cost: 1 publisher → N subscribers, no sockets (the plane does no I/O).

Prints the median µs per forwarded packet (per subscriber copy) and the implied packets/s per
core, for:
  baseline     the bare minimum in Python: struct.pack of a new fixed header + payload concat
  video        VP8 1100-byte packets through ForwardingPlane.handle_rtp (plain RTP out)
  video+mung   same after a layer switch (VP8 picture id/TL0PICIDX rewritten per subscriber)
  audio+ext    opus 100-byte packets with audio-level + mid extensions, remapped per subscriber
  video+srtp   video, each subscriber's output protected with pylibsrtp (AES-128-GCM)

Run: python -m bench.forwarding
"""

from __future__ import annotations

import os
import statistics
import struct
import time
from collections.abc import Callable

from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.rtp import URI_AUDIO_LEVEL, URI_MID, build_extension_block

SUBSCRIBERS = (1, 10, 50)
PACKETS = 3000
PUB = "PA_bench"


def _vp8_payload(picture_id: int, key: bool) -> bytes:
    frame = b"\x10\x02\x00\x9d\x01\x2a" if key else b"\x31\x02\x00\x00\x00\x00"
    head = bytes([0x90, 0xE0]) + struct.pack("!HBB", 0x8000 | picture_id, picture_id & 0xFF, 0x20)
    return head + frame + bytes(1100 - len(head) - len(frame))


def _packets(ssrc: int, count: int, *, video: bool, ext: bytes = b"") -> list[bytes]:
    b0 = 0x90 if ext else 0x80
    out = []
    for i in range(count):
        if video:
            pt, ts, payload = 96, 3000 * (i // 4), _vp8_payload(i // 4, key=i == 0)
        else:
            pt, ts, payload = 111, 960 * i, bytes(100)
        out.append(struct.pack("!BBHII", b0, pt, i, ts, ssrc) + ext + payload)
    return out


def _checked(fwd: ForwardingPlane, n: int, result: float) -> float:
    """Fail loudly if the run did not actually forward (a bench of dropped packets is a lie)."""
    for i in range(n):
        downtrack = fwd.downtrack("TR_x", f"PA_{i}")
        assert downtrack is not None and downtrack.packets_sent >= PACKETS - 2, "not forwarding"
    return result


def _time_calls(call: Callable[[bytes], None], packets: list[bytes], copies: int) -> float:
    """Median ns per forwarded copy over individually timed calls (first 10% = warm-up)."""
    samples = []
    clock = time.perf_counter_ns
    for packet in packets:
        start = clock()
        call(packet)
        samples.append(clock() - start)
    return statistics.median(samples[len(samples) // 10 :]) / copies / 1000


def bench_baseline(n: int) -> float:
    packets = _packets(1, PACKETS, video=True)
    header = struct.Struct("!BBHII")
    sink: list[bytes] = []
    send = sink.append
    ssrcs = list(range(n))

    def forward(packet: bytes) -> None:
        tail = packet[12:]
        seq, ts = struct.unpack_from("!HI", packet, 2)
        for ssrc in ssrcs:
            send(header.pack(0x80, 100, (seq + 7) & 0xFFFF, (ts + 9) & 0xFFFFFFFF, ssrc) + tail)
        sink.clear()

    return _time_calls(forward, packets, n)


def _plane(
    n: int, *, video: bool, send_factory: Callable[[], Callable[[bytes], None]] | None = None
) -> ForwardingPlane:
    fwd = ForwardingPlane()
    fwd.add_uptrack(
        "TR_x",
        "video" if video else "audio",
        codecs={96: "video/VP8"} if video else {111: "audio/opus"},
        extensions={} if video else {1: URI_AUDIO_LEVEL, 4: URI_MID},
        rids=[],
        ssrcs={0xABCD: None},
        mid="1",
        send_rtcp=lambda data: None,
        publisher=PUB,
    )
    for i in range(n):
        sink: list[bytes] = []
        send = send_factory() if send_factory else sink.append
        fwd.add_downtrack(
            "TR_x",
            f"PA_{i}",
            ssrc=0x1000 + i,
            codecs={"video/vp8": 100} if video else {"audio/opus": 109},
            extensions={} if video else {URI_AUDIO_LEVEL: 3},
            send_rtp=send if send_factory else _bounded(sink),
            send_rtcp=lambda data: None,
        )
    return fwd


def _bounded(sink: list[bytes]) -> Callable[[bytes], None]:
    def send(data: bytes) -> None:
        if len(sink) > 64:
            sink.clear()
        sink.append(data)

    return send


def bench_video(n: int, *, munged: bool = False) -> float:
    fwd = _plane(n, video=True)
    packets = _packets(0xABCD, PACKETS, video=True)
    if munged:  # pause + resume: a new epoch with non-zero picture id offsets
        fwd.handle_rtp(PUB, packets[0])
        for i in range(n):
            fwd.set_target_layer("TR_x", f"PA_{i}", None)
            fwd.set_target_layer("TR_x", f"PA_{i}", 0)
        packets = _packets(0xABCD, PACKETS, video=True)[1:]
        packets.insert(0, struct.pack("!BBHII", 0x80, 96, 1, 3000, 0xABCD) + _vp8_payload(9, True))
        packets = [packets[0]] + [
            p[:2] + struct.pack("!H", i + 2) + p[4:] for i, p in enumerate(packets[1:])
        ]
    return _checked(fwd, n, _time_calls(lambda p: fwd.handle_rtp(PUB, p), packets, n))


def bench_audio(n: int) -> float:
    fwd = _plane(n, video=False)
    ext = build_extension_block([(4, b"1"), (1, b"\x9e")])
    packets = _packets(0xABCD, PACKETS, video=False, ext=ext)
    return _checked(fwd, n, _time_calls(lambda p: fwd.handle_rtp(PUB, p), packets, n))


def bench_video_srtp(n: int) -> float | None:
    try:
        import pylibsrtp
    except ImportError:
        return None

    def factory() -> Callable[[bytes], None]:
        policy = pylibsrtp.Policy(
            key=os.urandom(28),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        )
        session = pylibsrtp.Session(policy=policy)
        protect = session.protect
        last: list[bytes] = [b""]

        def send(data: bytes) -> None:
            last[0] = protect(data)

        return send

    fwd = _plane(n, video=True, send_factory=factory)
    packets = _packets(0xABCD, PACKETS, video=True)
    return _checked(fwd, n, _time_calls(lambda p: fwd.handle_rtp(PUB, p), packets, n))


def main() -> None:
    rows: list[tuple[str, int, float | None]] = []
    for n in SUBSCRIBERS:
        rows.append(("baseline (pack+concat)", n, bench_baseline(n)))
        rows.append(("video VP8 1100 B", n, bench_video(n)))
        rows.append(("video VP8, munged pid", n, bench_video(n, munged=True)))
        rows.append(("audio opus + ext remap", n, bench_audio(n)))
        rows.append(("video + SRTP protect", n, bench_video_srtp(n)))
    print(f"forwarding plane, 1 publisher -> N subscribers, {PACKETS} packets per row")
    print(f"{'path':<26}{'N':>4}{'median µs/pkt':>15}{'pkts/s/core':>13}")
    for name, n, us in rows:
        if us is None:
            print(f"{name:<26}{n:>4}{'n/a':>15}{'n/a':>13}")
        else:
            print(f"{name:<26}{n:>4}{us:>15.2f}{1e6 / us:>13,.0f}")


if __name__ == "__main__":
    main()
