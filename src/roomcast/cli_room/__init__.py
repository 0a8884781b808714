"""`roomcast room …`: lk-style room commands against a running server (LiveKit's or Roomcast's).

parser.py    the argparse tree: names and flags as livekit-cli's `lk room …`
commands.py  the RoomService commands, one API call each, through client/roomservice.py
output.py    tables and lines for people, JSON (`--json`) for scripts, errors that say why
join.py      `room join [--publish-demo]`: a participant on Roomcast's own WebRTC client
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from roomcast.client.roomservice import ApiError, RoomServiceClient

from .commands import HANDLERS, UsageError
from .output import report
from .parser import add_parser

__all__ = ["add_parser", "main"]


def main(args: argparse.Namespace) -> int:
    """Run a parsed `roomcast room …` command; the exit status (0 done, 1 refused or
    unreachable, 2 bad arguments)."""
    command = args.room_command
    if command == "participants":
        command = f"participants {args.participants_command}"
    if command == "join":
        from .join import main as join

        return join(args)
    try:
        return asyncio.run(_run(command, args))
    except UsageError as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a URL that is not one
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        return report(exc, args)


async def _run(command: str, args: argparse.Namespace) -> int:
    async with RoomServiceClient(args.url, args.api_key, args.api_secret) as client:
        await HANDLERS[command](client, args)
    return 0
