"""A participant's state in a room: the one source of truth the API, signalling and webhooks read.

State machine (docs/protocol/11-room-lifecycle.md §11.4): JOINING → JOINED (JoinResponse sent) →
ACTIVE (primary PeerConnection connected) → DISCONNECTED. ``version`` increases on every change
(docs/protocol/05-room-and-participant-updates.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit.protocol import models, rtc

from roomcast.auth import Claims, VideoGrant
from roomcast.ids import PARTICIPANT_PREFIX, new_sid
from roomcast.rooms.contracts import ParticipantSession

State = models.ParticipantInfo.State
DEPENDENT_KINDS = {models.ParticipantInfo.Kind.AGENT, models.ParticipantInfo.Kind.EGRESS}


@dataclass
class Participant:
    identity: str
    name: str = ""
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    kind: int = models.ParticipantInfo.Kind.STANDARD
    grant: VideoGrant = field(default_factory=VideoGrant)
    client_protocol: int = 0
    sid: str = field(default_factory=lambda: new_sid(PARTICIPANT_PREFIX))
    state: int = State.JOINING
    joined_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    version: int = 0
    is_publisher: bool = False
    disconnect_reason: int = models.DisconnectReason.UNKNOWN_REASON
    permission: models.ParticipantPermission = field(default_factory=models.ParticipantPermission)
    tracks: dict[str, models.TrackInfo] = field(default_factory=dict)
    # Published data tracks by the publisher's handle (rooms/data_tracks.py); every
    # ParticipantInfo lists them all (docs/protocol/17-data-tracks.md §2.3).
    data_tracks: dict[int, models.DataTrackInfo] = field(default_factory=dict)
    capabilities: list[int] = field(default_factory=list)
    # AddTrackRequests waiting for their media, keyed by the client's track id (cid).
    pending_tracks: dict[str, models.TrackInfo] = field(default_factory=dict)
    # What the participant asked for by track sid (UpdateSubscription / UpdateTrackSettings).
    desired_subscriptions: dict[str, bool] = field(default_factory=dict)
    subscription_permission: rtc.SubscriptionPermission | None = None
    # Highest reliable DataPacket.sequence received from this participant (resume de-dup).
    last_data_sequence: int = 0
    session: ParticipantSession | None = None
    on_changed: Callable[[Participant], None] | None = None

    def __post_init__(self) -> None:
        self.permission = self.grant.to_permission()
        self.version = 1

    @classmethod
    def from_claims(cls, claims: Claims, client_protocol: int = 0) -> Participant:
        return cls(
            identity=claims.identity,
            name=claims.name,
            metadata=claims.metadata,
            attributes=dict(claims.attributes),
            kind=claims.participant_kind,
            grant=claims.video,
            client_protocol=client_protocol,
        )

    @property
    def hidden(self) -> bool:
        return self.permission.hidden

    @property
    def is_dependent(self) -> bool:
        """Agents and recorders do not keep a room open
        (docs/protocol/11-room-lifecycle.md §11.3)."""
        return self.kind in DEPENDENT_KINDS or self.permission.agent or self.permission.recorder

    @property
    def is_connected(self) -> bool:
        return self.state in (State.JOINED, State.ACTIVE)

    def touch(self) -> None:
        """Record a change: bump the version and let the room broadcast it."""
        self.version += 1
        if self.on_changed is not None:
            self.on_changed(self)

    def set_state(self, state: int) -> bool:
        # States only move forward; DISCONNECTED is final.
        if state <= self.state:
            return False
        self.state = state
        self.touch()
        return True

    def to_proto(self, *, identity_only: bool = False) -> models.ParticipantInfo:
        if identity_only:
            return models.ParticipantInfo(sid=self.sid, identity=self.identity)
        return models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            state=self.state,  # type: ignore[arg-type]
            tracks=list(self.tracks.values()),
            data_tracks=list(self.data_tracks.values()),
            metadata=self.metadata,
            joined_at=self.joined_at_ms // 1000,
            joined_at_ms=self.joined_at_ms,
            name=self.name,
            version=self.version,
            permission=self.permission,
            is_publisher=self.is_publisher,
            kind=self.kind,  # type: ignore[arg-type]
            attributes=self.attributes,
            disconnect_reason=self.disconnect_reason,  # type: ignore[arg-type]
            client_protocol=self.client_protocol,
            capabilities=self.capabilities,  # type: ignore[arg-type]
        )
