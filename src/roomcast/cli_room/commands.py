"""The RoomService commands of `roomcast room …`, each one API call (two for
`participants update --permissions`, which changes only the fields given, as lk does)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf import json_format
from livekit.protocol import models
from livekit.protocol import room as room_pb

from roomcast.client.roomservice import RoomServiceClient

from .output import as_dict, describe_participant, participants_table, print_json, table, when


class UsageError(Exception):
    """Bad arguments found after parsing (exit status 2)."""


Handler = Callable[[RoomServiceClient, argparse.Namespace], Awaitable[None]]


async def list_rooms(client: RoomServiceClient, args: argparse.Namespace) -> None:
    rooms = await client.list_rooms(args.names)
    if args.json:
        print_json({"rooms": [as_dict(room) for room in rooms]})
        return
    if not rooms:
        print("No matching rooms." if args.names else "No active rooms.")
        return
    rows = [
        (r.sid, r.name, str(r.num_participants), str(r.num_publishers), when(r.creation_time))
        for r in rooms
    ]
    print(table(("ROOM ID", "NAME", "PARTICIPANTS", "PUBLISHERS", "CREATED"), rows))


def _create_request(args: argparse.Namespace) -> room_pb.CreateRoomRequest:
    request = room_pb.CreateRoomRequest(name=args.name)
    for field in (
        "empty_timeout",
        "departure_timeout",
        "max_participants",
        "metadata",
        "min_playout_delay",
        "max_playout_delay",
        "node_id",
        "room_preset",
    ):
        value = getattr(args, field)
        if value is not None:
            if isinstance(value, int) and value < 0:
                raise UsageError(f"--{field.replace('_', '-')} must not be negative")
            setattr(request, field, value)
    request.sync_streams = args.sync_streams
    if args.agents_file:
        agents = room_pb.RoomAgent()
        try:
            json_format.Parse(Path(args.agents_file).read_text(), agents)
        except (OSError, json_format.ParseError) as exc:
            raise UsageError(f"--agents-file {args.agents_file}: {exc}") from None
        request.agents.extend(agents.dispatches)
    return request


async def create_room(client: RoomServiceClient, args: argparse.Namespace) -> None:
    room = await client.create_room(_create_request(args))
    if args.json:
        print_json(as_dict(room))
        return
    limit = room.max_participants or "no limit"
    print(
        f"Created room {room.name} ({room.sid}): empty timeout {room.empty_timeout} s, "
        f"departure timeout {room.departure_timeout} s, max participants {limit}"
    )


async def delete_room(client: RoomServiceClient, args: argparse.Namespace) -> None:
    await client.delete_room(args.name)
    if args.json:
        print_json({"deleted": args.name})
    else:
        print(f"Deleted room {args.name}")


async def update_room(client: RoomServiceClient, args: argparse.Namespace) -> None:
    room = await client.update_room_metadata(args.name, args.metadata)
    if args.json:
        print_json(as_dict(room))
    else:
        print(f"Updated the metadata of room {room.name}: {room.metadata!r}")


async def list_participants(client: RoomServiceClient, args: argparse.Namespace) -> None:
    participants = await client.list_participants(args.room)
    if args.json:
        print_json({"participants": [as_dict(p) for p in participants]})
    elif not participants:
        print(f"Nobody in room {args.room}.")
    else:
        print(participants_table(participants))


async def get_participant(client: RoomServiceClient, args: argparse.Namespace) -> None:
    participant = await client.get_participant(args.room, args.identity)
    if args.json:
        print_json(as_dict(participant))
    else:
        print(describe_participant(participant))


async def remove_participant(client: RoomServiceClient, args: argparse.Namespace) -> None:
    await client.remove_participant(args.room, args.identity)
    if args.json:
        print_json({"removed": args.identity, "room": args.room})
    else:
        print(f"Removed {args.identity} from room {args.room}")


async def update_participant(client: RoomServiceClient, args: argparse.Namespace) -> None:
    request = room_pb.UpdateParticipantRequest(room=args.room, identity=args.identity)
    if args.metadata is None and args.name is None and not args.attribute and not args.permissions:
        raise UsageError("nothing to update: give --metadata, --name, --attribute or --permissions")
    if args.metadata is not None:
        request.metadata = args.metadata
    if args.name is not None:
        request.name = args.name
    request.attributes.update(key_values(args.attribute))
    if args.permissions:
        current = await client.get_participant(args.room, args.identity)
        request.permission.CopyFrom(current.permission)
        try:
            json_format.ParseDict(json.loads(args.permissions), request.permission)
        except (ValueError, json_format.ParseError) as exc:
            raise UsageError(f"--permissions: {exc}") from None
    participant = await client.update_participant(request)
    if args.json:
        print_json(as_dict(participant))
    else:
        print(f"Updated {participant.identity} in room {args.room}")


def key_values(items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--attribute expects KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


async def mute_track(client: RoomServiceClient, args: argparse.Namespace) -> None:
    muted = not args.unmute
    track = await client.mute_published_track(args.room, args.identity, args.track_sid, muted)
    if args.json:
        print_json(as_dict(track))
    else:
        verb = "Muted" if track.muted else "Unmuted"
        kind = models.TrackType.Name(track.type).lower()
        print(f"{verb} {kind} track {track.sid} of {args.identity} in room {args.room}")


async def update_subscriptions(client: RoomServiceClient, args: argparse.Namespace) -> None:
    subscribe = not args.unsubscribe
    await client.update_subscriptions(args.room, args.identity, args.track_sids, subscribe)
    if args.json:
        print_json({"subscribed" if subscribe else "unsubscribed": args.track_sids})
    else:
        verb = "Subscribed" if subscribe else "Unsubscribed"
        tracks = ", ".join(args.track_sids)
        print(f"{verb} {args.identity} {'to' if subscribe else 'from'} {tracks}")


async def send_data(client: RoomServiceClient, args: argparse.Namespace) -> None:
    data = args.data.encode()
    request = room_pb.SendDataRequest(
        room=args.room, data=data, destination_identities=args.identity
    )
    if args.topic is not None:
        request.topic = args.topic
    await client.send_data(request)
    if args.json:
        print_json({"sent_bytes": len(data), "room": args.room})
        return
    to = ", ".join(args.identity) if args.identity else "everyone"
    topic = f" on topic {args.topic!r}" if args.topic is not None else ""
    print(f"Sent {len(data)} bytes to {to} in room {args.room}{topic}")


HANDLERS: dict[str, Handler] = {
    "list": list_rooms,
    "create": create_room,
    "delete": delete_room,
    "update": update_room,
    "update-metadata": update_room,
    "participants list": list_participants,
    "participants get": get_participant,
    "participants remove": remove_participant,
    "participants update": update_participant,
    "mute-track": mute_track,
    "update-subscriptions": update_subscriptions,
    "send-data": send_data,
}
