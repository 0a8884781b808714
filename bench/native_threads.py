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

Run: python -m bench.native_threads [--subscribers 500] [--rate 600] [--seconds 5]
     [--threads 1,2]
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


def publisher_packets(key: bytes, count: int) -> list[bytes]:
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    policy = pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=GCM)
    session = pylibsrtp.Session(policy)
    payload = bytes([0x90, 0x80, 0x80, 0x05, 0x00]) + b"v" * 1000  # VP8 keyframe, ~1 KB
    return [
        session.protect(
            struct.pack("!BBHII", 0x80, VP8_PT, n & 0xFFFF, n * 375, PUB_SSRC) + payload
        )
        for n in range(count)
    ]


def run(threads: int, subscribers: int, rate: float, seconds: float) -> dict[str, float]:
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
    kinds = bytearray(128)
    kinds[VP8_PT] = 2
    rates = [0] * 128
    rates[VP8_PT] = 90000
    uptrack = engine.add_uptrack(True, 1, bytes(kinds), rates, 1024)
    engine.bind_ssrc(pub, PUB_SSRC, uptrack, 0)
    pt_map = bytearray([255] * 128)
    pt_map[VP8_PT] = SUB_PT
    sinks = []
    for i in range(subscribers):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sinks.append(sink)
        transport = engine.add_transport()
        engine.key_transport(transport, *sink.getsockname(), GCM, os.urandom(KEY), os.urandom(KEY))
        down = engine.add_downtrack(uptrack, transport, 0x20000000 + i, bytes(pt_map), bytes(256))
        engine.control(down, 0, -2, False)
    packets = publisher_packets(pub_key, int(rate * (seconds + 1)))
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
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"1 publisher at {args.rate:g} packets/s to {args.subscribers} subscribers")
    columns = ("threads", "sent/s", "in/s", "fwd/s", "fwd %", "cores", "µs/pkt")
    print(" ".join(f"{c:>9}" for c in (*columns, "q.drop", "send.fail")))
    for threads in (int(t) for t in args.threads.split(",")):
        r = run(threads, args.subscribers, args.rate, args.seconds)
        cells = [
            f"{r[c]:>9.0f}" if c != "cores" and c != "µs/pkt" else f"{r[c]:>9.2f}" for c in columns
        ]
        print(" ".join(cells), f"{r['queue_dropped']:>9.0f} {r['send_failed']:>9.0f}")


if __name__ == "__main__":
    main()
