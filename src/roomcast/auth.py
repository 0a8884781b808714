"""Access tokens: HS256 JWTs carrying LiveKit claims and grants (docs/protocol/09-access-tokens.md).

The server reads ``iss`` (the API key) before verifying, looks the secret up, then verifies the
signature, ``exp`` (required) and ``nbf`` with 60 s of leeway, as LiveKit's verifier does.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning
from livekit.protocol import models

# LiveKit accepts short secrets (the dev secret is "secret"); outside dev mode the server logs an
# error for each once at start-up (config.short_secrets, server.py) instead of PyJWT warning on
# every token.
warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)

LEEWAY_SECONDS = 60
DEFAULT_TTL_SECONDS = 6 * 3600
MAX_TOKEN_LENGTH = 64 * 1024

# Lower-case TrackSource names used in `canPublishSources` (docs/protocol/09-access-tokens.md §9.2).
_SOURCE_NAMES = {
    "camera": models.TrackSource.CAMERA,
    "microphone": models.TrackSource.MICROPHONE,
    "screen_share": models.TrackSource.SCREEN_SHARE,
    "screen_share_audio": models.TrackSource.SCREEN_SHARE_AUDIO,
}
_KIND_NAMES = {
    "standard": models.ParticipantInfo.Kind.STANDARD,
    "ingress": models.ParticipantInfo.Kind.INGRESS,
    "egress": models.ParticipantInfo.Kind.EGRESS,
    "sip": models.ParticipantInfo.Kind.SIP,
    "agent": models.ParticipantInfo.Kind.AGENT,
}


class AuthError(Exception):
    """The token is missing, malformed, signed with an unknown key or outside its validity."""


@dataclass(frozen=True, slots=True)
class VideoGrant:
    """The ``video`` claim. ``None`` means absent: some grants default to true when absent."""

    room_create: bool = False
    room_list: bool = False
    room_record: bool = False
    room_admin: bool = False
    room_join: bool = False
    room: str = ""
    destination_room: str = ""
    can_publish: bool | None = None
    can_subscribe: bool | None = None
    can_publish_data: bool | None = None
    can_publish_sources: tuple[str, ...] = ()
    can_update_own_metadata: bool | None = None
    can_subscribe_metrics: bool = False
    can_manage_agent_session: bool = False
    ingress_admin: bool = False
    hidden: bool = False
    recorder: bool = False
    agent: bool = False

    # Defaults when absent follow LiveKit's GetCanPublish & co.
    # (docs/protocol/09-access-tokens.md §9.2).
    @property
    def effective_can_publish(self) -> bool:
        return True if self.can_publish is None else self.can_publish

    @property
    def effective_can_subscribe(self) -> bool:
        return True if self.can_subscribe is None else self.can_subscribe

    @property
    def effective_can_publish_data(self) -> bool:
        if self.can_publish_data is None:
            return self.effective_can_publish
        return self.can_publish_data

    @property
    def effective_can_update_own_metadata(self) -> bool:
        return bool(self.can_update_own_metadata)

    def is_admin_of(self, room: str) -> bool:
        return self.room_admin and bool(room) and self.room == room

    def with_permission(self, permission: models.ParticipantPermission) -> VideoGrant:
        """This grant with the rights a live participant holds now: a refreshed token must not
        give back what an admin revoked (as LiveKit's ``UpdateFromPermission``)."""
        names = {value: name for name, value in _SOURCE_NAMES.items()}
        return dataclasses.replace(
            self,
            can_publish=permission.can_publish,
            can_subscribe=permission.can_subscribe,
            can_publish_data=permission.can_publish_data,
            can_publish_sources=tuple(
                names[s] for s in permission.can_publish_sources if s in names
            ),
            can_update_own_metadata=permission.can_update_metadata,
            hidden=permission.hidden,
            recorder=permission.recorder,
            agent=permission.agent,
            can_subscribe_metrics=permission.can_subscribe_metrics,
            can_manage_agent_session=permission.can_manage_agent_session,
        )

    def to_permission(self) -> models.ParticipantPermission:
        """ParticipantPermission as LiveKit derives it from the grant
        (docs/protocol/09-access-tokens.md §9.2)."""
        return models.ParticipantPermission(
            can_subscribe=self.effective_can_subscribe,
            can_publish=self.effective_can_publish,
            can_publish_data=self.effective_can_publish_data,
            can_publish_sources=[_SOURCE_NAMES[s] for s in self.can_publish_sources],
            hidden=self.hidden,
            recorder=self.recorder,
            can_update_metadata=self.effective_can_update_own_metadata,
            agent=self.agent,
            can_subscribe_metrics=self.can_subscribe_metrics,
            can_manage_agent_session=self.can_manage_agent_session,
        )

    @classmethod
    def from_claim(cls, raw: Any) -> VideoGrant:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise AuthError("video grant must be an object")

        def flag(name: str) -> bool:
            value = raw.get(name)
            if value is None:
                return False
            if not isinstance(value, bool):
                raise AuthError(f"video.{name} must be a boolean")
            return value

        def optional_flag(name: str) -> bool | None:
            return flag(name) if raw.get(name) is not None else None

        def text(name: str) -> str:
            value = raw.get(name, "")
            if not isinstance(value, str):
                raise AuthError(f"video.{name} must be a string")
            return value

        sources = raw.get("canPublishSources") or []
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise AuthError("video.canPublishSources must be a list of strings")
        unknown = [s for s in sources if s.lower() not in _SOURCE_NAMES]
        if unknown:
            raise AuthError(f"video.canPublishSources has unknown sources {unknown}")
        return cls(
            room_create=flag("roomCreate"),
            room_list=flag("roomList"),
            room_record=flag("roomRecord"),
            room_admin=flag("roomAdmin"),
            room_join=flag("roomJoin"),
            room=text("room"),
            destination_room=text("destinationRoom"),
            can_publish=optional_flag("canPublish"),
            can_subscribe=optional_flag("canSubscribe"),
            can_publish_data=optional_flag("canPublishData"),
            can_publish_sources=tuple(s.lower() for s in sources),
            can_update_own_metadata=optional_flag("canUpdateOwnMetadata"),
            can_subscribe_metrics=flag("canSubscribeMetrics"),
            can_manage_agent_session=flag("canManageAgentSession"),
            ingress_admin=flag("ingressAdmin"),
            hidden=flag("hidden"),
            recorder=flag("recorder"),
            agent=flag("agent"),
        )

    def to_claim(self) -> dict[str, Any]:
        claim: dict[str, Any] = {}
        for attr, name in _GRANT_JSON_NAMES.items():
            value = getattr(self, attr)
            if value is None or value is False or value == "" or value == ():
                continue
            claim[name] = list(value) if isinstance(value, tuple) else value
        # Explicit false matters for the grants that default to true when absent.
        for attr in ("can_publish", "can_subscribe", "can_publish_data"):
            if getattr(self, attr) is False:
                claim[_GRANT_JSON_NAMES[attr]] = False
        return claim


_GRANT_JSON_NAMES = {
    "room_create": "roomCreate",
    "room_list": "roomList",
    "room_record": "roomRecord",
    "room_admin": "roomAdmin",
    "room_join": "roomJoin",
    "room": "room",
    "destination_room": "destinationRoom",
    "can_publish": "canPublish",
    "can_subscribe": "canSubscribe",
    "can_publish_data": "canPublishData",
    "can_publish_sources": "canPublishSources",
    "can_update_own_metadata": "canUpdateOwnMetadata",
    "can_subscribe_metrics": "canSubscribeMetrics",
    "can_manage_agent_session": "canManageAgentSession",
    "ingress_admin": "ingressAdmin",
    "hidden": "hidden",
    "recorder": "recorder",
    "agent": "agent",
}


@dataclass(frozen=True, slots=True)
class Claims:
    """Verified token contents."""

    api_key: str
    identity: str = ""
    name: str = ""
    kind: str = "standard"
    metadata: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    video: VideoGrant = field(default_factory=VideoGrant)
    room_config: Mapping[str, Any] | None = None
    room_preset: str = ""
    sha256: str = ""
    sip_admin: bool = False
    sip_call: bool = False
    expires_at: float = 0.0

    @property
    def participant_kind(self) -> int:
        return _KIND_NAMES.get(self.kind.lower(), models.ParticipantInfo.Kind.STANDARD)


class TokenVerifier:
    """Verifies tokens against the configured ``{api_key: secret}`` pairs."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    def secret_for(self, api_key: str) -> str | None:
        return self._keys.get(api_key)

    def verify(self, token: str) -> Claims:
        if not token:
            raise AuthError("no authorization token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("token too long")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        if header.get("alg") != "HS256":
            raise AuthError("invalid token: only HS256 is accepted")
        api_key = unverified.get("iss")
        if not isinstance(api_key, str) or api_key not in self._keys:
            raise AuthError("invalid API key")
        try:
            payload = jwt.decode(
                token,
                self._keys[api_key],
                algorithms=["HS256"],
                issuer=api_key,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token is expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("token is not valid yet") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        return _claims_from_payload(api_key, payload)


def _claims_from_payload(api_key: str, payload: Mapping[str, Any]) -> Claims:
    def text(name: str) -> str:
        value = payload.get(name) or ""
        if not isinstance(value, str):
            raise AuthError(f"claim {name} must be a string")
        return value

    attributes = payload.get("attributes") or {}
    if not isinstance(attributes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise AuthError("claim attributes must map strings to strings")
    room_config = payload.get("roomConfig")
    if room_config is not None and not isinstance(room_config, Mapping):
        raise AuthError("claim roomConfig must be an object")
    sip = payload.get("sip") or {}
    if not isinstance(sip, Mapping):
        raise AuthError("claim sip must be an object")
    return Claims(
        api_key=api_key,
        identity=text("sub") or text("jti"),
        name=text("name"),
        kind=text("kind") or "standard",
        metadata=text("metadata"),
        attributes=dict(attributes),
        video=VideoGrant.from_claim(payload.get("video")),
        room_config=room_config,
        room_preset=text("roomPreset"),
        sha256=text("sha256"),
        sip_admin=bool(sip.get("admin")),
        sip_call=bool(sip.get("call")),
        expires_at=float(payload.get("exp", 0)),
    )


def create_token(
    api_key: str,
    api_secret: str,
    *,
    identity: str = "",
    name: str = "",
    metadata: str = "",
    attributes: Mapping[str, str] | None = None,
    video: VideoGrant | None = None,
    kind: str = "",
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    room_config: Mapping[str, Any] | None = None,
    sha256: str = "",
    now: float | None = None,
) -> str:
    """Mint an HS256 token the way the official server SDKs do."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "iss": api_key,
        "nbf": issued,
        "exp": issued + int(ttl_seconds),
        "sub": identity,
    }
    if identity:
        payload["jti"] = identity
    if name:
        payload["name"] = name
    if metadata:
        payload["metadata"] = metadata
    if attributes:
        payload["attributes"] = dict(attributes)
    if kind:
        payload["kind"] = kind
    if video is not None:
        payload["video"] = video.to_claim()
    if room_config:
        payload["roomConfig"] = dict(room_config)
    if sha256:
        payload["sha256"] = sha256
    return jwt.encode(payload, api_secret, algorithm="HS256")


def body_sha256(body: bytes) -> str:
    """Standard base64 (with padding) of SHA-256 over the exact bytes (webhooks,
    docs/protocol/10-webhooks.md)."""
    return base64.b64encode(hashlib.sha256(body).digest()).decode()
