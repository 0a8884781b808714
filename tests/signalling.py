"""Which signalling path the official SDKs join on in a test: "v1" (`/rtc/v1`, one
PeerConnection: every SDK's default) or "v0" (`/rtc`, two PeerConnections: each SDK can be
forced onto it, `room_options` in tests/integration/sdk.py and `browser_room_options` here say
how). Tests that run on both take the `signalling` fixture (tests/conftest.py), which also
checks that each server in `servers` (those the test started) saw only that path."""

from __future__ import annotations

from typing import Any

PATHS = {"v1": "/rtc/v1", "v0": "/rtc"}
# The PeerConnections an SDK client has on each path, as its stats name them.
PEER_CONNECTIONS = {"v1": ("publisher",), "v0": ("publisher", "subscriber")}
current = "v1"
servers: list[Any] = []  # roomcast.server.Server instances started by the current test


def peer_connections() -> tuple[str, ...]:
    return PEER_CONNECTIONS[current]


def forced_v0() -> bool:
    return current == "v0"


def browser_room_options(options: dict[str, Any] | None = None) -> dict[str, Any]:
    """livekit-client `RoomOptions` on the current path (`singlePeerConnection: false` is
    livekit-client's switch to `/rtc`)."""
    merged = dict(options or {})
    if forced_v0():
        merged.setdefault("singlePeerConnection", False)
    return merged
