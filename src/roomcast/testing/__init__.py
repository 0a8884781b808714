"""Roomcast for the tests of LiveKit apps, agents and bots: a real server that installs with pip.

With pytest nothing needs importing: ``pip install roomcast`` registers a plugin (entry point
``pytest11``, name ``roomcast``; turn it off with ``-p no:roomcast``) whose fixtures are

    roomcast_server   a running server for the whole session: .url (ws://…), .http_url,
                      .api_key, .api_secret, .env, .token(identity, room, **grants),
                      .connect(identity, room) → a connected livekit.rtc.Room, .api() → a
                      livekit.api.LiveKitAPI, .new_room()
    roomcast_room     a room name of the test's own, deleted after the test
    roomcast_config   YAML for the server (override it, session-scoped, in a conftest.py)

Without pytest::

    async with RoomcastServer() as server:        # or: with RoomcastServer() as server:
        token = server.token("alice", "demo")

and the waits below work on any `livekit.rtc.Room`. README.md, "Testing your LiveKit app with
Roomcast", has a complete example.
"""

from roomcast.testing.server import RoomcastServer
from roomcast.testing.waits import (
    wait_for_data,
    wait_for_event,
    wait_for_frame,
    wait_for_participant,
    wait_for_track,
)

__all__ = [
    "RoomcastServer",
    "wait_for_data",
    "wait_for_event",
    "wait_for_frame",
    "wait_for_participant",
    "wait_for_track",
]
