"""A long fuzz run of the native forwarding plane (native/) under AddressSanitizer and
UndefinedBehaviorSanitizer.

Builds the extension with -fsanitize=address,undefined into a temporary directory (never into
the source tree), then runs a child Python with libasan preloaded that, until the time is up:
  - feeds mutated RTP packets (CSRCs, one/two-byte extensions, VP8 descriptors, H.264/H.265/
    VP9/AV1 payload headers, LiveKit packet trailers, padding, then random byte flips, cuts and
    splices) to the parsers and the rewriter (`_native.parse`, `_native.payload_facts`),
  - sends the same kind of packets, SRTP-protected with the publisher's key and plain, to a
    running engine from a keyed publisher address, with random NACKs from the subscriber side,
    layer switches and mutes, while a subscriber socket drains what is forwarded; with
    congestion control's calls too (numbered sends, RTX, padding and probes, send records,
    publisher arrivals, NACK bookkeeping), audio levels and trailer cutting.
Any memory error aborts the child with ASan's report; the run then fails (exit status 1).

The engine runs with `--threads` sender threads (2 by default: the hand-off to sender threads
is exercised). `--sanitize thread` builds with ThreadSanitizer instead (data races, lock-order
inversions); TSan's reports are printed and fail the run.

Run: python -m bench.native_fuzz [--seconds 600] [--seed N] [--threads 2] [--sanitize thread]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "native" / "module.c"


def build(out: Path, sanitize: str = "address,undefined") -> Path:
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is not installed")
    target = out / ("_native" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    command = [
        "gcc",
        "-shared",
        "-fPIC",
        "-O1",
        "-g",
        "-fno-omit-frame-pointer",
        f"-fsanitize={sanitize}",
        *(["-fno-sanitize-recover=undefined"] if "undefined" in sanitize else []),
        "-std=gnu11",
        f"-I{sysconfig.get_paths()['include']}",
        "-o",
        str(target),
        str(SOURCE),
        "-lsrtp2",
        "-lcrypto",
    ]
    subprocess.run(command, check=True)
    return target


def load(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader("roomcast.media._native", str(path))
    spec = importlib.util.spec_from_loader("roomcast.media._native", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


SVC_SSRCS = (0x9ABC, 0xDEF0)
DD_EXT = 12  # the fixtures' Dependency Descriptor id


def svc_fixture(codec: str, pt: int) -> list[bytes]:
    """The Python SDK's L3T3_KEY packets (tests/unit/fixtures), on payload type `pt`."""
    path = (
        Path(__file__).parent.parent / "tests" / "unit" / "fixtures" / f"{codec}_l3t3_key.rtp.hex"
    )
    lines = path.read_text().splitlines()
    packets = [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]
    return [p[:1] + bytes([(p[1] & 0x80) | pt]) + p[2:] for p in packets]


# Payload types of the fuzzed uptrack and what the engine reads of each (native/plane.h pt_kind):
# VP8 (most), audio, H.264, VP9, AV1, H.265, a video codec it cannot read.
PT_KINDS = {96: 2, 111: 1, 102: 4, 103: 5, 104: 6, 105: 7, 106: 3}
FUZZED_PTS = (96, 96, 96, 111, 102, 103, 104, 105, 106)


def random_packet(rng: random.Random) -> bytes:
    csrcs = rng.randrange(4)
    elements = [(rng.randrange(1, 15), rng.randbytes(rng.randrange(1, 17))) for _ in range(3)]
    block = b""
    form = rng.randrange(3)
    if form:
        if form == 1:
            body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements)
            profile = 0xBEDE
        else:
            body = b"".join(bytes([i, len(v)]) + v for i, v in elements)
            profile = 0x1000
        body += b"\x00" * (-len(body) % 4)
        block = struct.pack("!HH", profile, len(body) // 4) + body
    descriptor = bytes([0x90 | rng.choice((0, 0x80)), 0xC0, 0x80 | rng.randrange(128)])
    descriptor += bytes([rng.randrange(256), rng.randrange(256)])
    if rng.randrange(3) == 0:  # an H.264 STAP-A / H.265 AP / AV1 / VP9 / audio first byte
        descriptor = bytes([rng.choice((24, 28, 7, 0x60, 0x62, 0x08, 0x28, 0x88))])
        descriptor += struct.pack("!H", rng.randrange(40)) + rng.randbytes(3)
    payload = descriptor + bytes([rng.randrange(2)]) + rng.randbytes(rng.randrange(1300))
    if rng.randrange(6) == 0:  # LiveKit's packet trailer, its length sometimes lying
        payload += rng.randbytes(rng.randrange(8)) + bytes([rng.randrange(256)]) + b"LKTS"
    b0 = 0x80 | csrcs | (0x10 if block else 0)
    if rng.randrange(4) == 0:
        pad = rng.randrange(1, 20)
        b0 |= 0x20
        payload += b"\x00" * (pad - 1) + bytes([pad])
    header = struct.pack(
        "!BBHII", b0, rng.choice(FUZZED_PTS) | rng.choice((0, 0x80)), rng.randrange(65536),
        rng.getrandbits(32), 0x1234,
    )  # fmt: skip
    packet = bytearray(header + b"\x00" * (4 * csrcs) + block + payload)
    for _ in range(rng.randrange(4)):  # flips
        packet[rng.randrange(len(packet))] = rng.randrange(256)
    if rng.randrange(5) == 0:  # cut
        packet = packet[: rng.randrange(len(packet) + 1)]
    if rng.randrange(10) == 0:  # splice garbage
        at = rng.randrange(len(packet) + 1)
        packet[at:at] = rng.randbytes(rng.randrange(64))
    return bytes(packet[:1500])


def child(library: Path, seconds: float, seed: int, threads: int = 2) -> None:
    import pylibsrtp

    GCM = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
    native = load(library)
    rng = random.Random(seed)
    ids = bytes(rng.randrange(0, 20) if i else 0 for i in range(256))

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    engine = native.Engine(server.fileno(), threads)
    engine.start()
    address = server.getsockname()

    def policy(key: bytes, inbound: bool) -> pylibsrtp.Session:
        kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        p = pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=GCM)
        p.allow_repeat_tx = True
        return pylibsrtp.Session(p)

    pub, sub = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    pub_key = os.urandom(28)
    transports = []
    for sock in (pub, sub):
        sock.bind(("127.0.0.1", 0))
        transport = engine.add_transport()
        host, port = sock.getsockname()
        key = pub_key if sock is pub else os.urandom(28)
        engine.key_transport(transport, host, port, GCM, os.urandom(28), key)
        transports.append(transport)
    kinds = bytearray(128)
    rates = [0] * 128
    for pt, kind in PT_KINDS.items():
        kinds[pt] = kind
        rates[pt] = 48000 if kind == 1 else 90000
    uptrack = engine.add_uptrack(True, 2, bytes(kinds), rates, 512)
    engine.set_uptrack_levels(uptrack, rng.randrange(1, 15))  # audio levels, any element
    engine.bind_ssrc(transports[0], 0x1234, uptrack, 0)
    engine.bind_ssrc(transports[0], 0x5678, uptrack, 1)
    pt_map = bytes(100 if pt == 96 else pt if pt in PT_KINDS else 255 for pt in range(128))
    rtx_map = bytes(101 if pt == 100 else 255 for pt in range(128))
    # Congestion control: numbered sends, RTX, probes, arrivals and NACKs (ext 5 both ways).
    engine.set_uptrack_nack(uptrack, True)
    engine.set_transport_arrivals(transports[0], 5)
    engine.set_transport_cc(transports[1], 5)

    # Scalable streams (native/svc_forward.h): a VP9 one and an AV1 one with its descriptor
    # (element DD_EXT both ways), fed the SDK's real packets, mutated, and garbage.
    svc_tracks, svc_ups = [], []
    for pt, kind, dd_ext, ssrc in ((103, 5, 0, SVC_SSRCS[0]), (104, 6, DD_EXT, SVC_SSRCS[1])):
        svc_kinds = bytearray(128)
        svc_kinds[pt] = kind
        svc_rates = [0] * 128
        svc_rates[pt] = 90000
        svc_up = engine.add_uptrack(True, 1, bytes(svc_kinds), svc_rates, 512)
        engine.set_uptrack_svc(svc_up, kind, dd_ext)
        engine.bind_ssrc(transports[0], ssrc, svc_up, 0)
        svc_ups.append(svc_up)
        svc_map = bytes(pt if i == pt else 255 for i in range(128))
        svc_ids = bytes(0 if i == dd_ext else b for i, b in enumerate(ids))
        svc_tracks.append(
            engine.add_downtrack(
                svc_up,
                transports[1],
                0xABD0 + pt,
                svc_map,
                svc_ids,
                5,
                0xABCF,
                rtx_map,
                rng.randrange(2) == 1,
                DD_EXT,
            )
        )
    fixtures = [svc_fixture(name, pt) for name, pt in (("vp9", 103), ("av1", 104))]

    def new_downtrack() -> int:
        tw_id = rng.choice((0, 5, 5, 200))
        return engine.add_downtrack(
            uptrack, transports[1], 0xABCD, pt_map, ids, tw_id, 0xABCE, rtx_map,
            rng.randrange(2) == 1,  # cut packet trailers
        )  # fmt: skip

    downtrack = new_downtrack()

    deadline = time.monotonic() + seconds
    sender = policy(pub_key, False)
    seq = 0
    parsed = sent = drained = rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        for _ in range(200):
            native.parse(random_packet(rng), ids, True, rng.choice((0, 5, 200)))
            native.parse(rng.randbytes(rng.randrange(64)), ids, rng.randrange(2) == 1)
            native.payload_facts(rng.choice(tuple(PT_KINDS.values())), random_packet(rng)[12:])
            parsed += 3
        for _ in range(50):
            packet = random_packet(rng)
            if rng.randrange(4) and len(packet) >= 12:
                # Mostly in order on one of the two layers' SSRCs, so SRTP lets it through
                # to the parsers, the cache and the rewrite.
                seq += 1
                ssrc = rng.choice((0x1234, 0x5678))
                packet = (
                    packet[:2]
                    + struct.pack("!H", seq & 0xFFFF)
                    + packet[4:8]
                    + struct.pack("!I", ssrc)
                    + packet[12:]
                )
                try:
                    packet = sender.protect(packet)
                except (pylibsrtp.Error, ValueError):  # unreadable header, or too long
                    pass
            pub.sendto(packet or b"\x80", address)
            sent += 1
        for down, packets, ssrc in zip(svc_tracks, fixtures, SVC_SSRCS, strict=True):
            start = rng.randrange(len(packets))
            for packet in packets[start : start + rng.randrange(1, 40)]:
                if rng.randrange(3) == 0:  # mutated
                    mutable = bytearray(packet)
                    for _ in range(rng.randrange(1, 4)):
                        mutable[rng.randrange(len(mutable))] = rng.randrange(256)
                    packet = bytes(mutable)
                seq += 1
                header = packet[:2] + struct.pack("!HI", seq & 0xFFFF, ssrc)
                packet = header[:4] + packet[4:8] + header[4:] + packet[12:]
                try:
                    packet = sender.protect(packet)
                except (pylibsrtp.Error, ValueError):  # a header the mutation made unreadable
                    pass
                pub.sendto(packet, address)
                sent += 1
            engine.svc_control(down, rng.randrange(8), rng.randrange(8), rng.randrange(10) == 0)
            engine.control(down, rng.randrange(-1, 1), rng.choice((-2, -1)), rng.randrange(8) == 0)
            engine.retransmit(down, [rng.randrange(65536) for _ in range(rng.randrange(10))])
            engine.svc_state(down)
        for up in svc_ups:
            engine.svc_stats(up)
        engine.control(downtrack, rng.randrange(-1, 2), rng.choice((-2, -1)), rng.randrange(8) == 0)
        engine.retransmit(downtrack, [rng.randrange(65536) for _ in range(rng.randrange(30))])
        if rng.randrange(50) == 0:  # churn: a new downtrack replaces the old one
            engine.remove_downtrack(downtrack)
            downtrack = new_downtrack()
        engine.send_rtp(transports[1], random_packet(rng))  # Python's own, numbered
        engine.number(transports[1], random_packet(rng))
        engine.pad(downtrack, rng.randrange(3))
        if rng.randrange(20) == 0:
            now = time.monotonic()
            engine.start_probe(transports[1], downtrack, rng.randrange(10**7), now, now + 0.5)
        engine.transport_sent(transports[1], rng.randrange(-5, 70000))
        engine.arrivals(transports[0])
        engine.levels(uptrack)
        engine.check_nacks(uptrack)
        engine.events()
        engine.downtrack_state(downtrack)
        engine.uptrack_state(uptrack)
        while select.select([sub], [], [], 0)[0]:
            sub.recv(4096)
            drained += 1
    svc_sent = [engine.downtrack_state(down)[1] for down in svc_tracks]
    engine.stop()
    print(
        f"fuzzed {seconds:.0f} s: {parsed} parses, {sent} datagrams to the engine, "
        f"{svc_sent} forwarded by the VP9 and AV1 SVC downtracks, "
        f"{drained} forwarded, {rounds} rounds; engine counters {engine.counters()}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.native_fuzz", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="the engine's sender threads")
    parser.add_argument("--sanitize", choices=("address", "thread"), default="address")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the sanitized library
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    if args.child:
        child(Path(args.child), args.seconds, seed, args.threads)
        return
    tsan = args.sanitize == "thread"
    with tempfile.TemporaryDirectory(prefix="roomcast-asan-") as out:
        library = build(Path(out), "thread" if tsan else "address,undefined")
        runtime = "libtsan.so" if tsan else "libasan.so"
        asan = subprocess.run(
            ["gcc", f"-print-file-name={runtime}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        env = {
            **os.environ,
            "LD_PRELOAD": asan,
            # CPython's own allocations are not leaks to report; any other error aborts.
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:halt_on_error=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
            "TSAN_OPTIONS": "halt_on_error=1:second_deadlock_stack=1",
            "PYTHONMALLOC": "malloc",
        }
        command = [sys.executable, "-m", "bench.native_fuzz", "--child", str(library)]
        command += ["--seconds", str(args.seconds), "--seed", str(seed)]
        command += ["--threads", str(args.threads)]
        name = "TSan" if tsan else "ASan+UBSan"
        print(
            f"fuzzing the native plane under {name} for {args.seconds:g} s, "
            f"{args.threads} sender threads (seed {seed})"
        )
        result = subprocess.run(command, env=env, cwd=ROOT, check=False)
        if result.returncode != 0:
            print(f"FAILED: the sanitized run exited with {result.returncode} (seed {seed})")
            raise SystemExit(1)
        print("no error found")


if __name__ == "__main__":
    main()
