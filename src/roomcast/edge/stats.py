"""``GET /stats``: live rooms, participants, tracks and server figures for the dashboard.

Read from the same room model and plane counters as /metrics (one source of truth).
Needs a token with ``roomList``, which shows what ListRooms shows: rooms and their participant
counts. Participants (hidden ones included) are listed only for the room the token is
``roomAdmin`` of, as ListParticipants requires (docs/protocol/08-server-api.md).
``?room=NAME`` limits the answer to one room.

For the dashboard's charts every room also carries its totals (``bitrate_bps``,
``packets_per_s``: what its publishers send; ``loss``: its worst track's), so rooms whose
participants are not listed still chart; each participant has a ``connection_quality`` slot
(ConnectionQuality's name, lower-case; null until the server computes one).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from livekit.protocol import models

from roomcast.auth import AuthError, TokenVerifier
from roomcast.edge.api import bearer_token
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.participant import Participant
from roomcast.telemetry import RateSampler

# Multi-node: every other live node's local_view() (routing/router.py gather_stats).
Gather = Callable[[], Awaitable[list[dict[str, Any]]]]


class StatsEndpoint:
    def __init__(
        self,
        verifier: TokenVerifier,
        rooms: RoomManager,
        rates: RateSampler,
        node_id: str = "",
        gather: Gather | None = None,
    ) -> None:
        self._verifier = verifier
        self._rooms = rooms
        self._rates = rates
        self._node_id = node_id
        self._gather = gather
        self._packets = PacketRates()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/stats", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            claims = self._verifier.verify(bearer_token(request))
        except AuthError as exc:
            return web.json_response({"error": str(exc)}, status=401)
        if not claims.video.room_list:
            return web.json_response({"error": "permissions denied (needs roomList)"}, status=401)
        views = [self.local_view()]
        if self._gather is not None:
            views += await self._gather()
        stats = merge(views)
        only = request.query.get("room")
        if only is not None:
            stats["rooms"] = [room for room in stats["rooms"] if room["name"] == only]
        for room in stats["rooms"]:
            if not claims.video.is_admin_of(room["name"]):
                room["participants"] = []
                room["participants_listed"] = False
        return web.json_response(stats)

    def local_view(self) -> dict[str, Any]:
        """This node's figures and rooms (what another node merges into its /stats)."""
        rooms = self._rooms_view()
        for room in rooms:
            room["node"] = self._node_id
        return {"node": self._node_id, "server": self._rates.server(), "rooms": rooms}

    def _rooms_view(self) -> list[dict[str, Any]]:
        packets = self._packets.sample(self._rates)
        rooms = []
        for room in self._rooms.list():
            participants = [self._participant(p, packets) for p in room.live_participants()]
            tracks = [t for p in participants for t in p["tracks"]]
            rooms.append(
                {
                    "sid": room.sid,
                    "name": room.name,
                    "metadata": room.metadata,
                    "created_at": int(room.created_at),
                    "max_participants": room.settings.max_participants,
                    "num_participants": room.num_participants,
                    "bitrate_bps": sum(t["bitrate_bps"] for t in tracks),
                    "packets_per_s": round(sum(t["packets_per_s"] for t in tracks), 1),
                    "loss": max((t["loss"] for t in tracks), default=0.0),
                    "participants_listed": True,
                    "participants": participants,
                }
            )
        return rooms

    def _participant(self, participant: Participant, packets: dict[str, float]) -> dict[str, Any]:
        return {
            "sid": participant.sid,
            "identity": participant.identity,
            "name": participant.name,
            "state": models.ParticipantInfo.State.Name(participant.state),
            "hidden": participant.hidden,
            "connection_quality": connection_quality(participant),
            "tracks": [
                {
                    "sid": track.sid,
                    "kind": models.TrackType.Name(track.type).lower(),
                    "source": models.TrackSource.Name(track.source).lower(),
                    "mime_type": track.mime_type,
                    "muted": track.muted,
                    "simulcast": track.simulcast,
                    "layers": [
                        {
                            "quality": models.VideoQuality.Name(layer.quality).lower(),
                            "width": layer.width,
                            "height": layer.height,
                        }
                        for layer in track.layers
                    ],
                    "width": track.width,
                    "height": track.height,
                    "bitrate_bps": round(self._rates.track_bps.get(track.sid, 0.0)),
                    "packets_per_s": round(packets.get(track.sid, 0.0), 1),
                    "loss": round(self._rates.track_loss.get(track.sid, 0.0), 4),
                }
                for track in participant.tracks.values()
            ],
            "data_tracks": [
                {
                    "sid": info.sid,
                    "name": info.name,
                    "pub_handle": info.pub_handle,
                    "encryption": models.Encryption.Type.Name(info.encryption).lower(),
                }
                for info in participant.data_tracks.values()
            ],
        }


def connection_quality(participant: Participant) -> str | None:
    """The participant's ConnectionQuality (livekit_models.proto) when the rooms layer keeps
    one as ``connection_quality``; None until then, which the dashboard shows as unknown."""
    quality = getattr(participant, "connection_quality", None)
    if quality is None:
        return None
    return str(models.ConnectionQuality.Name(quality)).lower()


class PacketRates:
    """Packets per second of each published track, from the plane's receive counters, over
    the time between two /stats answers (at least MIN_WINDOW: callers in between reuse it)."""

    MIN_WINDOW = 1.0

    def __init__(self) -> None:
        self._at = 0.0
        self._counts: dict[str, int] = {}
        self._rates: dict[str, float] = {}

    def sample(self, rates: RateSampler) -> dict[str, float]:
        now = time.monotonic()
        if now - self._at < self.MIN_WINDOW:
            return self._rates
        counts = {
            track.track_sid: sum(layer.packets for layer in track.layers)
            for track in rates.plane.uptracks()
        }
        if self._at:
            elapsed = now - self._at
            self._rates = {
                sid: max(0, count - self._counts.get(sid, count)) / elapsed
                for sid, count in counts.items()
            }
        self._at, self._counts = now, counts
        return self._rates


def merge(views: list[dict[str, Any]]) -> dict[str, Any]:
    """One /stats for the cluster: rooms of every node, server figures summed, per-node list.

    With one view (single node) this is that node's view, as before."""
    keys = ("cpu_percent", "memory_mib", "packets_in_per_s", "packets_out_per_s")
    total = {key: round(sum(v["server"].get(key, 0) for v in views), 1) for key in keys}
    return {
        "server": total,
        "nodes": [{"id": v["node"], **v["server"], "rooms": len(v["rooms"])} for v in views],
        "rooms": sorted((room for v in views for room in v["rooms"]), key=lambda r: r["name"]),
    }
