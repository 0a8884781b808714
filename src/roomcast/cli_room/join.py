"""`roomcast room join ROOM_NAME [--publish-demo]`: one participant, on Roomcast's own client
(client/demo.py), until Ctrl-C, SIGTERM or --duration; each event a timestamped line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys
import time

import aiohttp

from roomcast.auth import VideoGrant, create_token
from roomcast.client.demo import DemoParticipant
from roomcast.client.peer import PeerError
from roomcast.client.signal import SignalError, rtc_url

from .commands import UsageError, key_values


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)


def main(args: argparse.Namespace) -> int:
    try:
        attributes = key_values(args.attribute)
        rtc_url(args.url, "", auto_subscribe=False, adaptive_stream=False)  # checks the URL
    except (UsageError, ValueError) as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print("roomcast: --duration must be longer than zero", file=sys.stderr)
        return 2
    identity = args.identity or f"roomcast-{secrets.token_hex(3)}"
    token = create_token(
        args.api_key,
        args.api_secret,
        identity=identity,
        name=args.name,
        metadata=args.metadata,
        attributes=attributes,
        video=VideoGrant(room_join=True, room=args.room),
    )
    try:
        return asyncio.run(_run(args, token))
    except KeyboardInterrupt:
        return 0


async def _run(args: argparse.Namespace, token: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as session:
        participant = DemoParticipant(
            args.url,
            token,
            session,
            publish=args.publish_demo,
            auto_subscribe=args.auto_subscribe,
            on_event=_say,
        )
        try:
            await participant.join()
        except SignalError as exc:
            await participant.leave()
            print(f"roomcast: {await _why_refused(session, args.url, token, exc)}", file=sys.stderr)
            return 1
        except (PeerError, TimeoutError) as exc:
            await participant.leave()
            print(f"roomcast: joined, but media did not connect: {exc}", file=sys.stderr)
            return 1
        _say("press Ctrl-C to leave" if args.duration is None else f"leaving in {args.duration} s")
        closed = asyncio.ensure_future(participant.signal.closed.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([closed, stopped], timeout=args.duration, return_when="FIRST_COMPLETED")
        for waiter in (closed, stopped):
            waiter.cancel()
        by_server = participant.signal.closed.is_set()
        await participant.leave()
        if args.auto_subscribe:
            _say(f"received {participant.packets_received} media packets")
        if by_server:
            _say(f"disconnected by the server: {participant.signal.leave_reason}")
            return 1
        _say("left the room")
    return 0


async def _why_refused(
    session: aiohttp.ClientSession, url: str, token: str, exc: SignalError
) -> str:
    """The server's own words: LiveKit servers explain a refused join at /rtc/validate
    (docs/protocol/01-signalling-connection.md §1.2), as the SDKs ask them."""
    message = str(exc)
    if not message.startswith("join refused"):
        return f"{message}. Is the server running? Give its URL with --url or LIVEKIT_URL."
    validate = rtc_url(url, token, auto_subscribe=False, adaptive_stream=False)
    validate = validate.replace("/rtc?", "/rtc/validate?", 1).replace("ws", "http", 1)
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with session.get(validate, timeout=aiohttp.ClientTimeout(total=5)) as reply:
            body = (await reply.text()).strip()
            if reply.status == 401:
                return (
                    f"the server refused the token ({body}): check --api-key and --api-secret "
                    "(or LIVEKIT_API_KEY and LIVEKIT_API_SECRET)."
                )
            if body:
                return f"{message}: {body}"
    return message
