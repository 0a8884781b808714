"""How `roomcast room …` prints: aligned tables and short lines for people, JSON for scripts, and
errors that say what went wrong and what to check."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from livekit.protocol import models

from roomcast.client.roomservice import ApiError


def as_dict(message: Message) -> dict[str, Any]:
    """A message as Twirp's JSON has it: proto field names, unset fields included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def enum_name(enum: Any, value: int, prefix: str = "") -> str:
    name = str(enum.Name(value))
    return name.removeprefix(prefix)


def track_line(track: models.TrackInfo) -> str:
    kind = enum_name(models.TrackType, track.type).lower()
    source = enum_name(models.TrackSource, track.source).lower()
    codec = track.mime_type.split("/")[-1] if track.mime_type else "-"
    size = f" {track.width}x{track.height}" if track.width else ""
    muted = "  muted" if track.muted else ""
    return f"{track.sid}  {kind} {source} {codec}{size}{muted}"


def participants_table(participants: Sequence[models.ParticipantInfo]) -> str:
    rows = [
        (
            p.identity,
            p.name or "-",
            p.sid,
            enum_name(models.ParticipantInfo.State, p.state).lower(),
            enum_name(models.ParticipantInfo.Kind, p.kind).lower(),
            ", ".join(enum_name(models.TrackType, t.type).lower() for t in p.tracks) or "-",
            when(p.joined_at),
        )
        for p in participants
    ]
    return table(("IDENTITY", "NAME", "SID", "STATE", "KIND", "TRACKS", "JOINED"), rows)


def describe_participant(p: models.ParticipantInfo) -> str:
    permission = p.permission
    grants = [
        name
        for name, on in (
            ("publish", permission.can_publish),
            ("subscribe", permission.can_subscribe),
            ("publish data", permission.can_publish_data),
            ("update metadata", permission.can_update_metadata),
            ("hidden", permission.hidden),
        )
        if on
    ]
    lines = [
        f"identity     {p.identity}",
        f"name         {p.name or '-'}",
        f"sid          {p.sid}",
        f"state        {enum_name(models.ParticipantInfo.State, p.state).lower()}",
        f"kind         {enum_name(models.ParticipantInfo.Kind, p.kind).lower()}",
        f"joined       {when(p.joined_at)}",
        f"metadata     {p.metadata or '-'}",
        "attributes   " + (", ".join(f"{k}={v}" for k, v in sorted(p.attributes.items())) or "-"),
        f"permissions  {', '.join(grants) or 'none'}",
        f"tracks       {len(p.tracks) or 'none'}",
    ]
    lines += [f"  {track_line(track)}" for track in p.tracks]
    return "\n".join(lines)


def error_text(exc: ApiError, args: argparse.Namespace) -> str:
    """One sentence: what failed, and what to check."""
    if exc.code == "unreachable":
        return f"{exc.message}. Is the server running? Give its URL with --url or LIVEKIT_URL."
    if exc.code == "unauthenticated":
        return (
            f"the server refused the credentials ({exc.message}): check --api-key and "
            "--api-secret (or LIVEKIT_API_KEY and LIVEKIT_API_SECRET)."
        )
    if exc.code == "permission_denied":
        return f"permission denied: {exc.message}."
    if exc.code == "not_found":
        return f"{_missing(exc.message, args)} not found (the server says: {exc.message})."
    return f"{exc.message} ({exc.code}, HTTP {exc.status})." if exc.status else exc.message


def _missing(message: str, args: argparse.Namespace) -> str:
    room = getattr(args, "room", None) or getattr(args, "name", None)
    identity = getattr(args, "identity", None)
    if "participant" in message and identity:
        return f"participant {identity!r} in room {room!r}"
    if "track" in message and getattr(args, "track_sid", None):
        return f"track {args.track_sid!r} of {identity!r} in room {room!r}"
    return f"room {room!r}" if room else "it"


def report(exc: ApiError, args: argparse.Namespace) -> int:
    text = error_text(exc, args)
    if getattr(args, "json", False):
        print_json({"error": {"code": exc.code, "message": exc.message, "status": exc.status}})
    print(f"roomcast: {text}", file=sys.stderr)
    return 1
