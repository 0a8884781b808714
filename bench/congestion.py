"""Congestion control on a capped link, with stream allocation on and off (issue 16, item 7).

    .venv/bin/python -m bench.congestion                # as root; 500 kbit/s, ~2 minutes
    .venv/bin/python -m bench.congestion --cap 300 --trace

The scenario of tests/lab/test_congestion.py in the network lab (docs/network-lab.md): "near",
an official Python SDK participant next to the server, publishes 1280x720 in three simulcast
layers plus audio; "far", another one in a client network whose downlink is capped (`tc tbf`),
subscribes. Run twice, each time with a fresh server:

- on:  the default, `rtc.congestion_control.enabled: true`: far's downlink is estimated from
       its transport-cc feedback and its layers are allocated to fit (media/downlink.py);
- off: `rtc.congestion_control.enabled: false`, the baseline: far gets the layer it asks for
       (the top one: the Python SDK does no adaptive stream) whatever its link carries, which
       is what Roomcast did before issue 16. Everything else (transport-cc, NACK, RTX) stays.

After `--settle` s from far's join, `--seconds` s are measured at far: decoded video frames per
second (and what near sent per second on the layers far received), freezes (gaps over 500 ms
between decoded frames, and a picture still frozen at the end), the share of video packets lost
on the way (far's receive statistics), the layers decoded (frames per size), and audio frames
that carried the tone. Needs root, as the lab tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.integration.sdk import join_token
from tests.lab import netlab
from tests.lab.conftest import running_server, ws_url
from tests.lab.congestion import SIZE_OF_RID, publish_near, sent_fps
from tests.lab.netlab import NetworkLab
from tests.lab.peers import Peers

from roomcast.server import Server

FREEZE = 0.5  # s: sdk_peer.FREEZE


@dataclass
class Result:
    mode: str
    fps: float = 0.0
    sent_fps: float = 0.0  # what near sent per second on the layers far decoded
    freezes: list[float] = field(default_factory=list)
    loss: float = 0.0
    layers: dict[str, int] = field(default_factory=dict)
    audible: float = 0.0  # share of audio frames that carried the tone
    first_frame: float | None = None  # s from far's join to its first decoded video frame
    trace: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def lab_server(allocation: bool) -> AsyncIterator[tuple[NetworkLab, Server]]:
    lab = NetworkLab()
    try:
        enabled = "true" if allocation else "false"
        rtc_yaml = f"  congestion_control:\n    enabled: {enabled}\n"
        async with running_server(lab, rtc_yaml=rtc_yaml) as server:
            yield lab, server
    finally:
        lab.close()


def downlink_line(server: Server, elapsed: float) -> str:
    """What the server thinks of each subscriber's downlink, for --trace."""
    parts = [f"{elapsed:6.1f}s"]
    by_subscriber: dict[str, list[Any]] = {}
    for downtrack in server.plane.downtracks():
        by_subscriber.setdefault(downtrack.subscriber, []).append(downtrack)
    for subscriber, downtracks in by_subscriber.items():
        downlink = server.plane.downlink(subscriber)
        if downlink is None:
            continue
        estimator = downlink.estimator
        estimate = estimator.estimate
        parts.append(
            f"est={'-' if estimate is None else round(estimate / 1000)}k"
            f" acked={round(estimator.acked_rate() / 1000)}k"
            f" sent={round(downlink.sent_bps / 1000)}k loss={estimator.loss():.2f}"
            f" probes={downlink.probes_won}/{downlink.probes}"
            f"{' PROBING' if downlink.probing() else ''}"
        )
        for downtrack in downtracks:
            if downtrack.kind == "video":
                parts.append(
                    f"allowed={downtrack.allowed} target={downtrack.target}"
                    f" current={downtrack.current}"
                )
    return "  ".join(parts)


async def run(allocation: bool, cap: int, settle: float, seconds: float, trace: bool) -> Result:
    result = Result("on" if allocation else "off")
    async with lab_server(allocation) as (lab, server):
        peers = Peers()
        try:
            url = ws_url(server)
            near = await publish_near(server, peers, "bench")  # its top layer at full rate
            lab.host.cap(cap, "down")
            far = await peers.start(
                "far", url, join_token("bench", "far"), lab.host.command(), "--publish", "none"
            )
            connected = await far.wait("connected", timeout=30)
            joined = time.monotonic()
            started = joined - connected["join_s"]
            tracer = asyncio.create_task(_trace(server, joined, result)) if trace else None
            await asyncio.sleep(settle)
            first = [e for e in far.events if e["event"] == "first_frame" and e["kind"] == "video"]
            if first:
                result.first_frame = first[0]["t"] - (joined - started)
            await far.command("mark")
            near_before = await near.command("stats")
            before = await far.command("stats")
            await asyncio.sleep(seconds)
            after = await far.command("stats")
            near_after = await near.command("stats")
            if tracer is not None:
                tracer.cancel()
            _measure(result, before, after, near_before, near_after)
        finally:
            await peers.stop_all()
    return result


async def _trace(server: Server, start: float, result: Result) -> None:
    while True:
        line = downlink_line(server, time.monotonic() - start)
        result.trace.append(line)
        print(f"  [{result.mode}] {line}", file=sys.stderr)
        await asyncio.sleep(1.0)


def _measure(
    result: Result,
    before: dict[str, Any],
    after: dict[str, Any],
    near_before: dict[str, Any],
    near_after: dict[str, Any],
) -> None:
    seconds = after["seconds_since_mark"]
    result.fps = after["since_mark"]["video"] / seconds
    result.layers = dict(after["video_sizes"])
    result.freezes = list(after["video_gaps"])
    stalled = after.get("video_stalled")
    if stalled is None or stalled > FREEZE:  # frozen at the end (or never a frame)
        result.freezes.append(round(seconds if stalled is None else min(stalled, seconds), 3))
    audio = after["since_mark"]["audio"]
    result.audible = after["since_mark"]["audible"] / audio if audio else 0.0
    received = after["inbound_video"]["packets_received"] - before["inbound_video"].get(
        "packets_received", 0
    )
    lost = after["inbound_video"]["packets_lost"] - before["inbound_video"].get("packets_lost", 0)
    result.loss = lost / (received + lost) if received + lost > 0 else 0.0
    sent = sent_fps(near_before, near_after, seconds)
    rates = [sent[r] for r, size in SIZE_OF_RID.items() if size in result.layers and r in sent]
    result.sent_fps = max(rates, default=0.0)


def table(results: list[Result], cap: int, seconds: float) -> str:
    rows = [
        ("allocation", [r.mode for r in results]),
        ("first video frame (s)", [_num(r.first_frame) for r in results]),
        ("decoded fps", [f"{r.fps:.1f} of {r.sent_fps:.1f} sent" for r in results]),
        (
            "freezes > 500 ms",
            [f"{len(r.freezes)}, {sum(r.freezes):.1f} s frozen" for r in results],
        ),
        ("video packets lost", [f"{100 * r.loss:.1f} %" for r in results]),
        ("layers decoded (frames)", [_layers(r.layers) for r in results]),
        ("audio frames with tone", [f"{100 * r.audible:.0f} %" for r in results]),
    ]
    width = max(len(label) for label, _ in rows)
    columns = [max(len(row[1][i]) for row in rows) for i in range(len(results))]
    lines = [f"{cap} kbit/s downlink, {seconds:g} s measured"]
    for label, values in rows:
        cells = " | ".join(v.ljust(columns[i]) for i, v in enumerate(values))
        lines.append(f"| {label.ljust(width)} | {cells} |")
        if label == "allocation":
            lines.append(f"|{'-' * (width + 2)}|" + "|".join("-" * (c + 2) for c in columns) + "|")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f}"


def _layers(sizes: dict[str, int]) -> str:
    ordered = sorted(sizes.items(), key=lambda item: int(item[0].split("x")[0]))
    return ", ".join(f"{size}: {count}" for size, count in ordered) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=int, default=500, help="far's downlink, kbit/s")
    parser.add_argument("--settle", type=float, default=15.0, help="s from join to measuring")
    parser.add_argument("--seconds", type=float, default=30.0, help="s measured")
    parser.add_argument("--only", choices=("on", "off"), help="run one mode")
    parser.add_argument("--trace", action="store_true", help="the server's view every second")
    args = parser.parse_args()
    reason = netlab.unavailable_reason()
    if reason is not None:
        sys.exit(f"bench.congestion: {reason}")
    netlab.sweep_stale()
    modes = [m for m in (True, False) if args.only is None or args.only == ("on" if m else "off")]

    async def all_modes() -> list[Result]:
        return [await run(m, args.cap, args.settle, args.seconds, args.trace) for m in modes]

    import uvloop

    results = uvloop.run(all_modes())
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(table(results, args.cap, args.seconds))


if __name__ == "__main__":
    main()
