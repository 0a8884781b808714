"""Forwarding throughput of Roomcast next to two baselines, on identical traffic, in one run.

One publisher sends the same synthetic VP8 stream (`bench/vp8_source.py`: a real libvpx
bitstream in fixed-size RTP packets at a fixed packet rate) to N subscribers through:

  Roomcast  `roomcast serve` (a subprocess) on the Python forwarding plane, publisher and
            subscribers joined over LiveKit signalling with Roomcast's own client peer (ICE,
            DTLS, SRTP); NACK, RTCP and stats are on, and the subscribers send receiver
            reports and NACK gaps;
  native    the same, on the native forwarding plane (media/native_plane.py, native/),
            with the server's default sender threads (ROOMCAST_FORWARDING_THREADS=N in the
            environment sets them; the subscribers here are Python, so on a small machine
            they saturate before the engine does: bench.native_threads drives the engine
            alone); congestion control is off for both (the other relays estimate nothing);
  roomcast-cc, native-cc   the same two with congestion control on (the server's default:
            transport-wide numbers on every packet to a subscriber, send records kept);
  C relay   bench/baselines/c_relay.c: recvmmsg/sendmmsg + libsrtp2 with pre-shared keys,
            the physical-limit reference (no ICE, DTLS, RTCP);
  Janus     Debian's janus, VideoRoom plugin over its HTTP API, reached with the same client
            peer (bench/relays/janus.py; in a network namespace of its own, needs root);
  aiortc    bench/baselines/aiortc_relay.py: RTCPeerConnections + MediaRelay, which decodes
            the VP8 and re-encodes it for every subscriber, the relay a Python user would
            otherwise write (reached by SDP offer/answer with the same client peer).

For each relay and fan-out: warm up until every subscriber receives, let the queues drain,
then send `rate x duration` packets and wait for the subscribers to go quiet. The relay
process's CPU time (utime + stime, /proc/<pid>/stat, with its children) over that window,
divided by the packets the subscribers received, gives µs CPU per forwarded packet.
The aiortc relay sends re-encoded packets, so for it a "forwarded packet" is a publisher
packet of a frame that reached a subscriber (frames counted by the RTP marker bit), and loss
is frame loss.

Run: python -m bench.compare [--fanouts 1,10,50,150] [--duration 10] [--rate 240]
                             [--relays roomcast,native,c,janus,aiortc,roomcast-cc,native-cc]
                             [--repeat 3]
                             [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.cpu import machine, process_cpu_seconds, process_cpu_times
from bench.relays.base import Relay, RelayUnavailable
from bench.vp8_source import Vp8RtpSource

RELAYS = ("roomcast", "native", "c", "janus", "aiortc", "roomcast-cc", "native-cc")
PUBLISHER_SSRC = 0x1234ABCD
QUIET = 0.3  # s without a packet at any subscriber: the relay's queues are empty
DRAINED = 1.5  # s of silence that end a window in which packets went missing
PACE_STEP = 0.002  # s between pacing wake-ups
IDLE_WINDOW = 2.0  # s of no media before each window: the relay's fixed cost (timers, RTCP)


@dataclasses.dataclass
class Measurement:
    relay: str
    fanout: int
    sent: int = 0  # publisher packets in the window
    expected: int = 0  # sent x fanout
    forwarded: int = 0  # packets counted at the subscribers (aiortc: see module docstring)
    received: int = 0  # raw packets at the subscribers
    frames_sent: int = 0
    frames_received: int = 0
    idle: float = 0.0  # share of a core the relay used with no media flowing
    cpu: float = 0.0  # s of relay CPU over the window
    system: float = 0.0  # of which in the kernel (stime)
    wall: float = 0.0  # s from the first packet to the subscribers going quiet
    rate: float = 0.0  # publisher packets/s
    error: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def loss(self) -> float:
        return 1 - self.forwarded / self.expected if self.expected else 1.0

    @property
    def us_per_packet(self) -> float | None:
        return self.cpu * 1e6 / self.forwarded if self.forwarded else None

    @property
    def packets_per_core(self) -> float | None:
        return self.forwarded / self.cpu if self.cpu > 0 else None

    @property
    def us_per_packet_net(self) -> float | None:
        """µs per packet after taking away what the relay spends when idle."""
        if not self.forwarded:
            return None
        return max(0.0, self.cpu - self.idle * self.wall) * 1e6 / self.forwarded

    @property
    def cpu_share(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


async def pace(send: Callable[[bytes], None], source: Vp8RtpSource, count: int) -> tuple[int, int]:
    """Send `count` packets at `source.rate` per second, then on to the end of the frame in
    progress; returns (packets, frames completed). Whole frames keep windows comparable for the
    re-encoding relay: aiortc's jitter buffer hands a frame on only when the next one starts,
    so a window that ends on a frame boundary leaves exactly one frame in it, released when
    the next window starts, and the count of each window stays exact."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = frames = 0
    in_frame = False
    while sent < count or in_frame:
        due = int((loop.time() - start) * source.rate) + 1
        while sent < due and (sent < count or in_frame):
            packet = source.next_packet()
            send(packet)
            end = packet[1] >> 7  # the marker bit: the last packet of a frame
            frames += end
            in_frame = not end
            sent += 1
        await asyncio.sleep(PACE_STEP)
    return sent, frames


async def until_quiet(
    relay: Relay, limit: float, done: Callable[[], bool] = lambda: False, quiet: float = QUIET
) -> None:
    """Wait until `done()`, or until no subscriber received anything for `quiet` seconds (at
    most `limit`)."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline and not done():
        total = sum(s.packets for s in relay.sinks)
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(min(QUIET, quiet))


async def _ticker(relay: Relay) -> None:
    while True:
        await asyncio.sleep(1.0)
        relay.tick()


async def measure(
    relay: Relay, source: Vp8RtpSource, *, duration: float, transcodes: bool, warmup: float
) -> Measurement:
    result = Measurement(relay.name, len(relay.sinks))
    ticker = asyncio.create_task(_ticker(relay))
    try:
        # Warm-up: every subscriber must be receiving (video starts at a keyframe).
        deadline = time.monotonic() + warmup
        while any(s.frames == 0 for s in relay.sinks) and time.monotonic() < deadline:
            await pace(relay.send, source, max(1, int(source.rate / 4)))
        waiting = sum(1 for s in relay.sinks if s.frames == 0)
        if waiting:
            result.notes.append(f"{waiting} subscribers received nothing during warm-up")
        await pace(relay.send, source, int(source.rate))
        await until_quiet(relay, 5.0)
        cpu0, wall0 = process_cpu_seconds(relay.pid), time.monotonic()
        await asyncio.sleep(IDLE_WINDOW)
        result.idle = (process_cpu_seconds(relay.pid) - cpu0) / (time.monotonic() - wall0)

        packets0 = sum(s.packets for s in relay.sinks)
        frames0 = sum(s.frames for s in relay.sinks)
        (user0, system0), wall0 = process_cpu_times(relay.pid), time.monotonic()
        result.rate = source.rate
        result.sent, result.frames_sent = await pace(
            relay.send, source, int(source.rate * duration)
        )
        n = len(relay.sinks)

        def everything_arrived() -> bool:
            if transcodes:  # frames, re-encoded: packets differ from the publisher's
                return sum(s.frames for s in relay.sinks) - frames0 >= result.frames_sent * n
            return sum(s.packets for s in relay.sinks) - packets0 >= result.sent * n

        # A relay that is behind (the re-encoding one, on a busy machine) can pause its
        # output for longer than QUIET with frames still in its pipeline: the window ends when
        # everything arrived, or after a longer silence (a relay that lost packets).
        await until_quiet(relay, max(5.0, duration / 2), everything_arrived, DRAINED)
        user, system = process_cpu_times(relay.pid)
        result.cpu = user + system - user0 - system0
        result.system = system - system0
        result.wall = time.monotonic() - wall0
        result.received = sum(s.packets for s in relay.sinks) - packets0
        result.frames_received = sum(s.frames for s in relay.sinks) - frames0
    finally:
        ticker.cancel()
    n = len(relay.sinks)
    result.expected = result.sent * n
    if transcodes:  # frames, counted in publisher packets
        share = result.frames_received / (result.frames_sent * n) if result.frames_sent else 0
        result.forwarded = round(result.expected * min(1.0, share))
    else:
        result.forwarded = result.received
    return result


async def run_one(kind: str, fanout: int, args: argparse.Namespace, build_dir: Path) -> Measurement:
    source = Vp8RtpSource(PUBLISHER_SSRC, rate=args.rate)
    starter = _starter(kind, args, build_dir, fanout)
    try:
        relay = await starter(fanout)
    except RelayUnavailable as exc:
        return Measurement(kind, fanout, error=str(exc))
    try:
        result = await measure(
            relay,
            source,
            duration=args.duration,
            transcodes=kind == "aiortc",
            warmup=args.warmup,
        )
    except Exception as exc:  # report and go on with the other relays
        result = Measurement(relay.name, fanout, error=f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(relay.close(), 30)
    result.notes.extend(relay.notes)
    if result.error is None:
        result.notes.append(
            f"packets {result.received}/{result.expected}, frames "
            f"{result.frames_received}/{result.frames_sent * fanout}, CPU {result.cpu:.2f} s "
            f"(kernel {result.system:.2f} s) in {result.wall:.2f} s"
        )
    return result


def _starter(
    kind: str, args: argparse.Namespace, build_dir: Path, fanout: int
) -> Callable[[int], Awaitable[Relay]]:
    if kind == "c":
        from bench.relays import c

        binary = build_dir / "c_relay"
        if not binary.exists():
            c.build(build_dir)
        return lambda n: c.start(binary, n)
    if kind in ("roomcast", "native", "roomcast-cc", "native-cc"):
        from bench.relays import roomcast

        profile = Path(args.profile) / f"{kind}-{fanout}.prof" if args.profile else None
        plane = "native" if kind.startswith("native") else "python"
        cc = kind.endswith("-cc")
        return lambda n: roomcast.start(
            n, PUBLISHER_SSRC, profile=profile, plane=plane, congestion_control=cc
        )
    if kind == "janus":
        from bench.relays import janus

        return lambda n: janus.start(n, PUBLISHER_SSRC)
    if kind == "aiortc":
        from bench.relays import aiortc

        return lambda n: aiortc.start(n, PUBLISHER_SSRC)
    raise ValueError(f"unknown relay {kind!r}")


def _median(results: list[Measurement]) -> Measurement:
    """The run with the median µs per packet (failed runs only if all failed)."""
    ok = [r for r in results if r.error is None and r.us_per_packet is not None]
    if not ok:
        return results[0]
    ok.sort(key=lambda r: r.us_per_packet or 0)
    return ok[(len(ok) - 1) // 2]


def format_table(rows: list[Measurement]) -> str:
    head = (
        f"{'fan-out':>7} {'relay':<11} {'sent/s':>7} {'fwd/s':>8} {'loss %':>7} "
        f"{'CPU %':>6} {'idle %':>6} {'µs/pkt':>7} {'net µs':>7} {'pkts/s/core':>11}"
    )
    lines = [head]
    for r in rows:
        name = {
            "Roomcast": "roomcast",
            "Roomcast native": "native",
            "Roomcast CC": "roomcast-cc",
            "Roomcast native CC": "native-cc",
            "C relay": "c",
            "Janus": "janus",
            "aiortc relay": "aiortc",
        }.get(r.relay)
        name = name or r.relay
        if r.error is not None:
            lines.append(f"{r.fanout:>7} {name:<11} error: {r.error}")
            continue
        sending = r.sent / r.rate if r.rate else 1  # s the publisher sent for
        us, net = r.us_per_packet, r.us_per_packet_net
        ppc = r.packets_per_core
        lines.append(
            f"{r.fanout:>7} {name:<11} {r.rate:>7.0f} {r.forwarded / sending:>8.0f} "
            f"{100 * r.loss:>7.2f} {100 * r.cpu_share:>6.1f} {100 * r.idle:>6.1f} "
            f"{_num(us):>7} {_num(net):>7} {(f'{ppc:,.0f}' if ppc else 'n/a'):>11}"
        )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_ratios(rows: list[Measurement]) -> str:
    lines = ["µs per forwarded packet, ratios (lower is better for Roomcast):"]
    by = {(r.relay, r.fanout): r for r in rows}
    pairs = (
        ("Roomcast", "C relay", "Roomcast/C"),
        ("Roomcast native", "C relay", "native/C"),
        ("Roomcast native", "Janus", "native/Janus"),
        ("Roomcast native CC", "C relay", "native CC/C"),
        ("Roomcast native CC", "Roomcast native", "native CC on/off"),
        ("Roomcast CC", "Roomcast", "Python CC on/off"),
        ("Roomcast", "aiortc relay", "Roomcast/aiortc"),
    )
    present = {r.relay for r in rows}
    for fanout in sorted({r.fanout for r in rows}):
        parts = []
        for mine, theirs, label in pairs:
            if mine not in present or theirs not in present:
                continue
            ours, other = by.get((mine, fanout)), by.get((theirs, fanout))
            if ours and other and ours.us_per_packet and other.us_per_packet:
                parts.append(f"{label} {ours.us_per_packet / other.us_per_packet:.2f}")
            else:
                parts.append(f"{label} n/a")
        lines.append(f"  fan-out {fanout:>3}: " + (", ".join(parts) or "n/a"))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Measurement]:
    fanouts = [int(x) for x in args.fanouts.split(",")]
    kinds = [k for k in args.relays.split(",") if k]
    for kind in kinds:
        if kind not in RELAYS:
            raise SystemExit(f"unknown relay {kind!r} (choose from {', '.join(RELAYS)})")
    print(f"machine: {machine()}")
    print(
        f"traffic: 1 publisher, VP8 640x360, {args.rate:g} packets/s of 1100 bytes, "
        f"{args.duration:g} s per run, {args.repeat} run(s) each (median shown)"
    )
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="roomcast-bench-") as build:
        for fanout in fanouts:
            runs: dict[str, list[Measurement]] = {k: [] for k in kinds}
            for _ in range(args.repeat):  # interleaved, so noise spreads over every relay
                for kind in kinds:
                    result = await run_one(kind, fanout, args, Path(build))
                    runs[kind].append(result)
                    for note in result.notes:
                        print(f"  [{kind} x{fanout}] {note}", flush=True)
            for kind in kinds:
                row = _median(runs[kind])
                rows.append(row)
                print(format_table([row]).splitlines()[1], flush=True)
    print()
    print(format_table(rows))
    print(format_ratios(rows))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--fanouts", default="1,10,50,150", help="subscriber counts")
    parser.add_argument("--duration", type=float, default=10.0, help="s measured per run")
    parser.add_argument("--rate", type=float, default=240.0, help="publisher packets/s")
    parser.add_argument("--relays", default=",".join(RELAYS), help="which relays, in order")
    parser.add_argument("--repeat", type=int, default=1, help="runs per relay and fan-out")
    parser.add_argument("--warmup", type=float, default=15.0, help="max s to wait for media")
    parser.add_argument("--profile", help="directory for Roomcast cProfile dumps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    import uvloop  # a Roomcast dependency; the subscribers' receive path needs its speed

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
