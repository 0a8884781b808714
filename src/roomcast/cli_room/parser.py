"""`roomcast room …`: argparse definitions, with livekit-cli's (`lk room …`) names and flags."""

from __future__ import annotations

import argparse
import os
from typing import TypeAlias

DEV_URL = "ws://127.0.0.1:7880"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _connection(json_output: bool = True) -> argparse.ArgumentParser:
    """--url/--api-key/--api-secret (and LIVEKIT_* environment, dev defaults), --json."""
    env = os.environ.get
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument(
        "--url",
        default=env("LIVEKIT_URL", DEV_URL),
        help=f"server URL, ws:// or http:// (env LIVEKIT_URL; default {DEV_URL}, `serve --dev`)",
    )
    group.add_argument(
        "--api-key",
        default=env("LIVEKIT_API_KEY", "devkey"),
        help="API key (env LIVEKIT_API_KEY; default devkey, the --dev key)",
    )
    group.add_argument(
        "--api-secret",
        default=env("LIVEKIT_API_SECRET", "secret"),
        help="API secret (env LIVEKIT_API_SECRET; default secret, the --dev secret)",
    )
    if json_output:
        common.add_argument(
            "-j", "--json", action="store_true", help="print JSON (for scripts) instead of text"
        )
    return common


def add_parser(sub: Subparsers) -> None:
    room = sub.add_parser(
        "room",
        help="create, list, update and delete rooms; manage participants; join a room",
        description="Rooms on a running server, through its RoomService API (lk room …). "
        "Exit status: 0 done, 1 refused or unreachable, 2 bad arguments.",
    )
    rsub = room.add_subparsers(dest="room_command", required=True, metavar="COMMAND")
    conn = _connection()

    p = rsub.add_parser("list", parents=[conn], help="list active rooms, or those named")
    p.add_argument("names", nargs="*", metavar="ROOM_NAME", help="only these rooms")

    p = rsub.add_parser("create", parents=[conn], help="create a room (CreateRoomRequest)")
    p.add_argument("name", metavar="ROOM_NAME")
    p.add_argument("--empty-timeout", type=int, metavar="SECS", help="close after SECS empty")
    p.add_argument(
        "--departure-timeout",
        type=int,
        metavar="SECS",
        help="keep the room SECS after the last participant left",
    )
    p.add_argument("--max-participants", type=int, metavar="N", help="0: no limit")
    p.add_argument("--metadata", help="room metadata")
    p.add_argument("--min-playout-delay", type=int, metavar="MS", help="video playout delay")
    p.add_argument("--max-playout-delay", type=int, metavar="MS", help="video playout delay")
    p.add_argument("--sync-streams", action="store_true", help="audio and video in one stream")
    p.add_argument("--node-id", help="create the room on this node (multi-node)")
    p.add_argument("--room-preset", metavar="NAME", help="room configuration preset")
    p.add_argument(
        "--agents-file",
        metavar="JSON",
        help='agents to dispatch, a RoomAgent JSON file: {"dispatches": [{"agent_name": …}]}',
    )

    p = rsub.add_parser("delete", parents=[conn], help="delete a room (participants are removed)")
    p.add_argument("name", metavar="ROOM_NAME")

    p = rsub.add_parser(
        "update",
        aliases=["update-metadata"],
        parents=[conn],
        help="set a room's metadata",
    )
    p.add_argument("name", metavar="ROOM_NAME")
    p.add_argument("--metadata", required=True)

    _participants_parser(rsub, conn)

    p = rsub.add_parser("mute-track", parents=[conn], help="mute or unmute a published track")
    p.add_argument("track_sid", metavar="TRACK_SID")
    _room_and_identity(p)
    mute = p.add_mutually_exclusive_group()
    mute.add_argument("-m", "--mute", action="store_true", help="mute the track (default)")
    mute.add_argument("-u", "--unmute", action="store_true", help="unmute the track")

    p = rsub.add_parser(
        "update-subscriptions",
        parents=[conn],
        help="subscribe a participant to tracks, or unsubscribe it",
    )
    p.add_argument("track_sids", nargs="+", metavar="TRACK_SID")
    _room_and_identity(p)
    subscribe = p.add_mutually_exclusive_group()
    subscribe.add_argument("-s", "--subscribe", action="store_true", help="subscribe (default)")
    subscribe.add_argument("-S", "--unsubscribe", action="store_true", help="unsubscribe")

    p = rsub.add_parser("send-data", parents=[conn], help="send a data packet from the server")
    p.add_argument("data", metavar="DATA", help="the payload (text, sent as UTF-8)")
    p.add_argument("-r", "--room", required=True, metavar="NAME")
    p.add_argument("--topic", help="topic of the packet")
    p.add_argument(
        "-i",
        "--identity",
        action="append",
        default=[],
        metavar="ID",
        help="send only to this participant (repeatable; default: everyone)",
    )

    _join_parser(rsub)


def _room_and_identity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--room", required=True, metavar="NAME", help="the room")
    p.add_argument("-i", "--identity", required=True, metavar="ID", help="the participant")


def _participants_parser(rsub: Subparsers, conn: argparse.ArgumentParser) -> None:
    participants = rsub.add_parser("participants", help="list, inspect, update and remove")
    psub = participants.add_subparsers(dest="participants_command", required=True)

    p = psub.add_parser("list", parents=[conn], help="list the participants of a room")
    p.add_argument("room", metavar="ROOM_NAME")

    for name, text in (("get", "show one participant"), ("remove", "remove from the room")):
        p = psub.add_parser(name, parents=[conn], help=text)
        p.add_argument("identity", metavar="ID", help="the participant's identity")
        p.add_argument("-r", "--room", required=True, metavar="NAME")

    p = psub.add_parser(
        "update", parents=[conn], help="change a participant's metadata, name or permissions"
    )
    p.add_argument("identity", metavar="ID")
    p.add_argument("-r", "--room", required=True, metavar="NAME")
    p.add_argument("--metadata", help="new metadata")
    p.add_argument("--name", help="new display name")
    p.add_argument(
        "--attribute", action="append", default=[], metavar="KEY=VALUE", help="(repeatable)"
    )
    p.add_argument(
        "--permissions",
        metavar="JSON",
        help='ParticipantPermission fields to change, e.g. {"can_publish": false}',
    )


def _join_parser(rsub: Subparsers) -> None:
    p = rsub.add_parser(
        "join",
        parents=[_connection(json_output=False)],
        help="join a room as a participant (and publish a demo video and tone)",
        description="Join ROOM_NAME and print what happens in it (participants, tracks) until "
        "Ctrl-C. --publish-demo publishes a colour-bar test pattern (VP8) and a 440 Hz tone "
        "(opus), made by Roomcast's own client, no camera or encoder needed.",
    )
    p.add_argument("room", metavar="ROOM_NAME")
    p.add_argument("-i", "--identity", help="participant identity (default: a random one)")
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--metadata", default="", help="participant metadata")
    p.add_argument(
        "--attribute", action="append", default=[], metavar="KEY=VALUE", help="(repeatable)"
    )
    p.add_argument("--publish-demo", action="store_true", help="publish a test pattern and a tone")
    p.add_argument(
        "--auto-subscribe",
        action="store_true",
        help="subscribe to the room's tracks (received media is counted, not played)",
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECS",
        help="leave after SECS (default: stay until Ctrl-C or SIGTERM)",
    )
