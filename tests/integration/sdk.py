"""Helpers for driving the official Python `livekit` rtc SDK against a test server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from livekit import rtc

from roomcast.auth import VideoGrant
from roomcast.server import Server
from tests import signalling
from tests.conftest import token, url_of

EVENT_TIMEOUT = 20.0


class Events:
    """Records a Room's events so tests can await them instead of sleeping."""

    def __init__(self, room: rtc.Room, names: list[str]) -> None:
        self._seen: dict[str, list[tuple[Any, ...]]] = {name: [] for name in names}
        self._changed = asyncio.Event()
        for name in names:
            room.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self._seen[name].append(args)
            self._changed.set()

        return record

    def all(self, name: str) -> list[tuple[Any, ...]]:
        return list(self._seen[name])

    async def wait(
        self,
        name: str,
        where: Callable[..., bool] = lambda *_: True,
        timeout: float = EVENT_TIMEOUT,
    ) -> tuple[Any, ...]:
        """The first recorded ``name`` event whose arguments satisfy ``where``."""

        async def find() -> tuple[Any, ...]:
            while True:
                for args in self._seen[name]:
                    if where(*args):
                        return args
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)


async def until(condition: Callable[[], bool], timeout: float = EVENT_TIMEOUT) -> None:
    """Wait for server-side state that has no event of its own (checked every 10 ms)."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not reached")


ROOM_EVENTS = [
    "participant_connected",
    "participant_disconnected",
    "participant_metadata_changed",
    "participant_name_changed",
    "participant_attributes_changed",
    "participant_permissions_changed",
    "room_metadata_changed",
    "data_received",
    "disconnected",
    "connection_state_changed",
    "track_published",
    "track_unpublished",
    "track_subscribed",
    "track_unsubscribed",
    "track_muted",
    "track_unmuted",
    "active_speakers_changed",
]


def join_token(room: str, identity: str, **grant: Any) -> str:
    name = grant.pop("name", identity.title())
    metadata = grant.pop("metadata", "")
    attributes = grant.pop("attributes", None)
    kind = grant.pop("kind", "")
    return token(
        VideoGrant(room_join=True, room=room, **grant),
        identity=identity,
        name=name,
        metadata=metadata,
        attributes=attributes,
        kind=kind,
    )


def room_options(options: rtc.RoomOptions | None = None) -> rtc.RoomOptions:
    """`options` on the test's signalling path (tests/signalling.py): `single_peer_connection`
    False is the Python SDK's switch to `/rtc`; unset, it joins `/rtc/v1`."""
    options = options or rtc.RoomOptions()
    if signalling.forced_v0() and options.single_peer_connection is None:
        options = dataclasses.replace(options, single_peer_connection=False)
    return options


@asynccontextmanager
async def joined(
    server: Server,
    room: str,
    identity: str,
    *,
    options: rtc.RoomOptions | None = None,
    **grant: Any,
) -> AsyncIterator[tuple[rtc.Room, Events]]:
    """A connected SDK Room (disconnected at the end) and its recorded events."""
    client = rtc.Room()
    events = Events(client, ROOM_EVENTS)
    await client.connect(
        url_of(server, "ws"), join_token(room, identity, **grant), room_options(options)
    )
    try:
        yield client, events
    finally:
        if client.isconnected():
            await client.disconnect()
