"""`roomcast load-test`: lk load-test's flags on Roomcast's own client stack."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import signal
import sys

from roomcast import durations
from roomcast.client.media import RESOLUTIONS

from .report import progress_line, render, summarize
from .runner import LAYOUTS, PROTOCOLS, LoadTest, LoadTestConfig


class UsageError(Exception):
    """Bad flags: printed with the program name, exit code 2."""


def parse_duration(text: str) -> float:
    """Seconds from "30s", "2m", "1m30s", "500ms", "1h" or plain seconds."""
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "load-test",
        help="simulate publishers and subscribers against a LiveKit-compatible server",
        description="Join synthetic publishers (opus, VP8 simulcast) and subscribers to rooms "
        "on any LiveKit-compatible server, then print per-track and total figures.",
    )
    env = os.environ.get
    p.add_argument("--url", default=env("LIVEKIT_URL"), help="server URL (env LIVEKIT_URL)")
    p.add_argument("--api-key", default=env("LIVEKIT_API_KEY"), help="env LIVEKIT_API_KEY")
    p.add_argument("--api-secret", default=env("LIVEKIT_API_SECRET"), help="env LIVEKIT_API_SECRET")
    p.add_argument("--room", default="", help="room name (default load-test; room-N with --rooms)")
    p.add_argument("--rooms", type=int, default=1, help="spread participants over N rooms")
    p.add_argument(
        "--video-publishers",
        "--publishers",
        dest="video_publishers",
        type=int,
        default=0,
        help="participants publishing video",
    )
    p.add_argument("--audio-publishers", type=int, default=0, help="participants publishing audio")
    p.add_argument("--subscribers", type=int, default=0, help="participants subscribing to all")
    p.add_argument(
        "--duration", default="0", help="how long to run: 30s, 2m, 1h (default: until Ctrl-C)"
    )
    p.add_argument(
        "--video-resolution",
        default="high",
        help="high (720p, 3 layers), medium (540p) or low (360p)",
    )
    p.add_argument("--video-codec", default="vp8", help="vp8 (the only synthetic codec)")
    p.add_argument("--no-simulcast", action="store_true", help="publish one video layer")
    p.add_argument(
        "--num-per-second", type=float, default=5.0, help="participants joining per second"
    )
    p.add_argument("--layout", help="subscriber video layout: speaker, 3x3, 4x4 or 5x5")
    p.add_argument(
        "--simulate-speakers", action="store_true", help="audio levels with changing speakers"
    )
    p.add_argument(
        "--protocol",
        default="v1",
        help="signalling: v1 (/rtc/v1, one PeerConnection, as the SDKs) or v0 (/rtc, two)",
    )


def config_from_args(args: argparse.Namespace) -> LoadTestConfig:
    """Validate the flags; raises UsageError with a message a user can act on."""
    for flag, value in (("--url", args.url), ("--api-key", args.api_key)):
        if not value:
            raise UsageError(f"{flag} is required (or set {_ENV[flag]})")
    if not args.api_secret:
        raise UsageError("--api-secret is required (or set LIVEKIT_API_SECRET)")
    if not re.match(r"^(wss?|https?)://[^/\s]+", args.url):
        raise UsageError(f"--url must be ws://, wss://, http:// or https://host…, got {args.url!r}")
    for flag, value in (
        ("--video-publishers", args.video_publishers),
        ("--audio-publishers", args.audio_publishers),
        ("--subscribers", args.subscribers),
    ):
        if value < 0:
            raise UsageError(f"{flag} must not be negative")
    if not (args.video_publishers or args.audio_publishers or args.subscribers):
        raise UsageError(
            "nothing to do: give --video-publishers, --audio-publishers or --subscribers"
        )
    if args.rooms < 1:
        raise UsageError("--rooms must be at least 1")
    if args.num_per_second <= 0:
        raise UsageError("--num-per-second must be positive")
    if args.video_resolution not in RESOLUTIONS:
        raise UsageError(
            f"--video-resolution must be high, medium or low, got {args.video_resolution!r}"
        )
    if args.video_codec.lower() != "vp8":
        raise UsageError(
            f"--video-codec {args.video_codec!r} is not supported: the synthetic video "
            "generator writes VP8 only"
        )
    if args.layout is not None and args.layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, got {args.layout!r}")
    if args.protocol not in PROTOCOLS:
        raise UsageError(f"--protocol must be v0 or v1, got {args.protocol!r}")
    return LoadTestConfig(
        url=args.url,
        api_key=args.api_key,
        api_secret=args.api_secret,
        room=args.room,
        rooms=args.rooms,
        video_publishers=args.video_publishers,
        audio_publishers=args.audio_publishers,
        subscribers=args.subscribers,
        duration=parse_duration(args.duration),
        resolution=args.video_resolution,
        simulcast=not args.no_simulcast,
        num_per_second=args.num_per_second,
        layout=args.layout,
        simulate_speakers=args.simulate_speakers,
        protocol=args.protocol,
    )


_ENV = {"--url": "LIVEKIT_URL", "--api-key": "LIVEKIT_API_KEY"}


def main(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except UsageError as exc:
        print(f"roomcast load-test: error: {exc}", file=sys.stderr)
        return 2
    _raise_file_limit()
    import uvloop

    return uvloop.run(_run(config))


async def _run(config: LoadTestConfig) -> int:
    test = LoadTest(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tty = sys.stderr.isatty()
    ticks = 0

    def progress(test: LoadTest) -> None:
        nonlocal ticks
        ticks += 1
        if tty:
            print("\r" + progress_line(test), end="", file=sys.stderr, flush=True)
        elif ticks % 5 == 0:  # logs: a line every 5 s
            print(progress_line(test), file=sys.stderr, flush=True)

    rooms = ", ".join(config.room_names())
    print(
        f"load test on {config.url} ({config.protocol} signalling), rooms: {rooms}",
        file=sys.stderr,
    )
    await test.run(progress=progress, stop=stop)
    if tty:
        print(file=sys.stderr)
    summary = summarize(test)
    print(render(summary))
    return 1 if summary.failed else 0


def _raise_file_limit() -> None:
    """Two UDP sockets and a WebSocket per participant: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
