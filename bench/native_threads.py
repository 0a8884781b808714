"""How the native engine's fan-out scales with its sender threads (`rtc.forwarding_threads`),
the engine alone, in this process: one publisher, one uptrack, N subscriber transports.

The per-packet path is the engine's as in production (SRTP unprotect of the publisher's
packets, parse, routing, rewrite per subscriber, AES-GCM protect, sendmmsg to real loopback
sockets), without signalling, ICE or DTLS: keys are set with `key_transport`. The subscribers'
sockets are never read (the kernel drops what overflows them), so the load generator costs
almost nothing and the engine can be driven beyond one core on a small machine, which
bench.compare's Python subscribers cannot do. The publisher sends pre-protected VP8 keyframe
packets at `--rate`, paced in 5 ms steps. The engine's own threads' CPU (roomcast-recv,
roomcast-send<i>, /proc/self/task) over the window gives cores used and µs per forwarded
packet.

`--codecs` compares tracks: VP8 keyframes (the default), opus with audio levels, and the
Python SDK's VP9 and AV1 L3T3_KEY packets as scalable streams (each subscriber's selector
keeping every layer; AV1's descriptor rewritten per subscriber).

Run: python -m bench.native_threads [--subscribers 500] [--rate 600] [--seconds 5]
     [--threads 1,2] [--codecs vp8,opus,vp9,av1]
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import time
from pathlib import Path

import pylibsrtp

from bench.cpu import machine
from roomcast.media.native_plane import native_module
from roomcast.media.rtp import find_extension, parse_rtp

GCM = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
KEY = 28
PUB_SSRC, VP8_PT, SUB_PT = 0x11112222, 96, 100
_TICKS = os.sysconf("SC_CLK_TCK")


def engine_cpu() -> float:
    """utime + stime of this process's engine threads (named in native/), seconds."""
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        try:
            if not (task / "comm").read_text().startswith("roomcast-"):
                continue
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


# --codec: payload type, the engine's pt kind (native/plane.h), clock rate, whether scalable.
CODECS = {
    "vp8": (VP8_PT, 2, 90000, False),
    "opus": (111, 1, 48000, False),
    "vp9": (98, 5, 90000, True),  # the Python SDK's L3T3_KEY packets, all layers forwarded
    "av1": (35, 6, 90000, True),  # the same with its Dependency Descriptor (rewritten); the
    # top decode target of L3T3_KEY leaves out the lower spatial layers between keyframes
}
DD_EXT = 12  # the fixtures' Dependency Descriptor id, kept for the subscribers


def plain_packets(codec: str, count: int) -> list[bytes]:
    """`count` plain RTP packets of the publisher, sequence numbers and timestamps running on."""
    pt = CODECS[codec][0]
    if codec == "vp8":
        payload = bytes([0x90, 0x80, 0x80, 0x05, 0x00]) + b"v" * 1000  # VP8 keyframe, ~1 KB
        return [
            struct.pack("!BBHII", 0x80, pt, n & 0xFFFF, n * 375, PUB_SSRC) + payload
            for n in range(count)
        ]
    if codec == "opus":  # 20 ms frames with an RFC 6464 level (element 1)
        level = struct.pack("!HHBB2x", 0xBEDE, 1, 1 << 4, 0x80 | 30)
        return [
            struct.pack("!BBHII", 0x90, pt, n & 0xFFFF, n * 960, PUB_SSRC) + level + b"o" * 100
            for n in range(count)
        ]
    path = Path(__file__).parent.parent / "tests" / "unit" / "fixtures"
    lines = (path / f"{codec}_l3t3_key.rtp.hex").read_text().splitlines()
    fixture = [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]
    first_ts = struct.unpack_from("!I", fixture[0], 4)[0]
    span = (struct.unpack_from("!I", fixture[-1], 4)[0] - first_ts + 3000) & 0xFFFFFFFF
    descriptors = [find_extension(p, parse_rtp(p), DD_EXT) for p in fixture]
    frames = [
        struct.unpack_from("!H", p, d[0] + 1)[0]
        for p, d in zip(fixture, descriptors, strict=True)
        if d
    ]
    frame_span = (max(frames) - min(frames) + 1) if frames else 0
    out = []
    for n in range(count):  # the fixture over and over, each loop starting at its keyframe
        loop, packet = divmod(n, len(fixture))
        packet = fixture[packet]
        ts = (struct.unpack_from("!I", packet, 4)[0] - first_ts + span * loop) & 0xFFFFFFFF
        header = struct.pack("!BBHII", packet[0], (packet[1] & 0x80) | pt, n & 0xFFFF, ts, PUB_SSRC)
        body = bytearray(packet[12:])
        found = descriptors[n % len(fixture)]
        if codec == "av1" and found:  # frame numbers run on too (DD frame_number, bytes 1-2)
            at = found[0] + 1 - 12
            number = struct.unpack_from("!H", body, at)[0]
            struct.pack_into("!H", body, at, (number + frame_span * loop) & 0xFFFF)
        out.append(header + bytes(body))
    return out


def publisher_packets(key: bytes, count: int, codec: str = "vp8") -> list[bytes]:
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    policy = pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=GCM)
    session = pylibsrtp.Session(policy)
    return [session.protect(packet) for packet in plain_packets(codec, count)]


def run(
    threads: int, subscribers: int, rate: float, seconds: float, codec: str = "vp8"
) -> dict[str, float]:
    native, why = native_module()
    if native is None:
        raise SystemExit(f"the native engine is not built: {why}")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    engine = native.Engine(server.fileno(), threads)
    engine.start()
    pub_key = os.urandom(KEY)
    pub_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pub_sock.bind(("127.0.0.1", 0))
    pub = engine.add_transport()
    engine.key_transport(pub, *pub_sock.getsockname(), GCM, os.urandom(KEY), pub_key)
    pt, pt_kind, clock_rate, scalable = CODECS[codec]
    kinds = bytearray(128)
    kinds[pt] = pt_kind
    rates = [0] * 128
    rates[pt] = clock_rate
    uptrack = engine.add_uptrack(codec != "opus", 1, bytes(kinds), rates, 1024)
    if codec == "opus":
        engine.set_uptrack_levels(uptrack, 1)  # the speaker detector's input, as in production
    if scalable:
        engine.set_uptrack_svc(uptrack, pt_kind, DD_EXT if codec == "av1" else 0)
    engine.bind_ssrc(pub, PUB_SSRC, uptrack, 0)
    pt_map = bytearray([255] * 128)
    pt_map[pt] = SUB_PT
    ids = bytearray(256)
    ids[1] = 1  # the audio level, forwarded
    sinks = []
    for i in range(subscribers):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sinks.append(sink)
        transport = engine.add_transport()
        engine.key_transport(transport, *sink.getsockname(), GCM, os.urandom(KEY), os.urandom(KEY))
        no_rtx = bytes([255] * 128)
        down = engine.add_downtrack(
            uptrack, transport, 0x20000000 + i, bytes(pt_map), bytes(ids), 0, 0, no_rtx, False,
            DD_EXT if codec == "av1" else 0,
        )  # fmt: skip
        engine.control(down, 0, -2, False)
        if scalable:
            engine.svc_control(down, 2, 7, False)  # every spatial and temporal layer
    packets = publisher_packets(pub_key, int(rate * (seconds + 1)), codec)
    to = server.getsockname()
    warm = int(rate)  # one second of warm-up
    step = max(1, int(rate * 0.005))
    start = time.monotonic()
    measured: tuple[float, float, dict[str, int]] | None = None
    for n in range(0, len(packets), step):
        if n >= warm and measured is None:
            measured = (time.monotonic(), engine_cpu(), engine.counters())
        for packet in packets[n : n + step]:
            pub_sock.sendto(packet, to)
        delay = start + (n + step) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    assert measured is not None
    wall0, cpu0, before = measured
    wall, cpu, after = time.monotonic() - wall0, engine_cpu() - cpu0, engine.counters()
    engine.stop()
    for s in [server, pub_sock, *sinks]:
        s.close()
    forwarded = after["forwarded"] - before["forwarded"]
    wanted = (after["rtp_in"] - before["rtp_in"]) * subscribers
    return {
        "threads": threads,
        "sent/s": (len(packets) - warm) / wall,
        "in/s": (after["datagrams_in"] - before["datagrams_in"]) / wall,
        "fwd/s": forwarded / wall,
        "fwd %": 100 * forwarded / wanted if wanted else 0.0,
        "cores": cpu / wall,
        "µs/pkt": cpu * 1e6 / forwarded if forwarded else 0.0,
        "queue_dropped": after["queue_dropped"] - before["queue_dropped"],
        "send_failed": after["send_failed"] - before["send_failed"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.native_threads", description=__doc__)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--rate", type=float, default=600.0, help="publisher packets/s")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", default="1,2", help="sender thread counts to compare")
    parser.add_argument(
        "--codecs", default="vp8", help=f"tracks to compare, of {', '.join(CODECS)}"
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"1 publisher at {args.rate:g} packets/s to {args.subscribers} subscribers")
    columns = ("threads", "sent/s", "in/s", "fwd/s", "fwd %", "cores", "µs/pkt")
    print(" ".join(f"{c:>9}" for c in ("codec", *columns, "q.drop", "send.fail")))
    for codec in args.codecs.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            r = run(threads, args.subscribers, args.rate, args.seconds, codec)
            cells = [
                f"{r[c]:>9.0f}" if c != "cores" and c != "µs/pkt" else f"{r[c]:>9.2f}"
                for c in columns
            ]
            print(
                f"{codec:>9}",
                " ".join(cells),
                f"{r['queue_dropped']:>9.0f} {r['send_failed']:>9.0f}",
            )


if __name__ == "__main__":
    main()
