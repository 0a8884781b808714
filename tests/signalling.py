"""Which signalling path the official SDKs join on in a test: "v1" (`/rtc/v1`, one
PeerConnection: every SDK's default) or "v0" (`/rtc`, two PeerConnections: each SDK can be
forced onto it, `v0_options` says how). Tests that run on both take the `signalling` fixture
(tests/conftest.py), which also checks that each server it started saw only that path."""

from __future__ import annotations

from typing import Any

PATHS = {"v1": "/rtc/v1", "v0": "/rtc"}
current = "v1"


def forced_v0() -> bool:
    return current == "v0"


def browser_room_options(options: dict[str, Any] | None = None) -> dict[str, Any]:
    """livekit-client `RoomOptions` on the current path (`singlePeerConnection: false` is
    livekit-client's switch to `/rtc`)."""
    merged = dict(options or {})
    if forced_v0():
        merged.setdefault("singlePeerConnection", False)
    return merged
