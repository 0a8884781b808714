from __future__ import annotations

import time

import jwt
import pytest
from livekit import api
from livekit.protocol import models

from roomcast.auth import AuthError, TokenVerifier, VideoGrant, body_sha256, create_token

KEYS = {"key1": "secret-one", "key2": "secret-two"}
verifier = TokenVerifier(KEYS)


def test_round_trip_and_defaults() -> None:
    text = create_token(
        "key1", "secret-one", identity="bob", name="Bob", video=VideoGrant(room_join=True, room="r")
    )
    claims = verifier.verify(text)
    assert claims.api_key == "key1" and claims.identity == "bob" and claims.name == "Bob"
    grant = claims.video
    # Absent grants: canPublish/canSubscribe true, canPublishData follows canPublish,
    # canUpdateOwnMetadata false (docs/protocol/09-access-tokens.md).
    assert grant.effective_can_publish and grant.effective_can_subscribe
    assert grant.effective_can_publish_data and not grant.effective_can_update_own_metadata


def test_can_publish_data_follows_can_publish_when_absent() -> None:
    grant = VideoGrant.from_claim({"canPublish": False})
    assert not grant.effective_can_publish_data
    grant = VideoGrant.from_claim({"canPublish": False, "canPublishData": True})
    assert grant.effective_can_publish_data


def test_identity_falls_back_to_jti() -> None:
    payload = {"iss": "key1", "exp": time.time() + 60, "jti": "from-jti"}
    claims = verifier.verify(jwt.encode(payload, "secret-one", algorithm="HS256"))
    assert claims.identity == "from-jti"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: "", "no authorization token"),
        (lambda: "garbage", "invalid token"),
        (lambda: create_token("nokey", "x"), "invalid API key"),
        (lambda: create_token("key1", "secret-two"), "invalid token"),
        (
            lambda: create_token("key1", "secret-one", now=time.time() - 100, ttl_seconds=10),
            "expired",
        ),
        (lambda: create_token("key1", "secret-one", now=time.time() + 120), "not valid yet"),
        (lambda: jwt.encode({"iss": "key1"}, "secret-one", algorithm="HS256"), "exp"),
        (
            lambda: jwt.encode(
                {"iss": "key1", "exp": time.time() + 60}, "secret-one", algorithm="HS384"
            ),
            "only HS256",
        ),
        (
            lambda: jwt.encode(
                {"iss": "key1", "exp": time.time() + 60, "video": []},
                "secret-one",
                algorithm="HS256",
            ),
            "video grant",
        ),
        (
            lambda: jwt.encode(
                {"iss": "key1", "exp": time.time() + 60, "video": {"canPublishSources": ["nose"]}},
                "secret-one",
                algorithm="HS256",
            ),
            "unknown sources",
        ),
    ],
)
def test_rejections(make: object, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        verifier.verify(make())  # type: ignore[operator]


def test_leeway_accepts_slightly_expired() -> None:
    text = create_token("key1", "secret-one", now=time.time() - 30, ttl_seconds=10)
    assert verifier.verify(text).api_key == "key1"


def test_permission_from_node_style_token() -> None:
    payload = {
        "iss": "key2",
        "exp": time.time() + 60,
        "video": {
            "roomJoin": True,
            "room": "r",
            "canPublishSources": ["microphone"],
            "hidden": True,
            "canUpdateOwnMetadata": True,
        },
        "kind": "agent",
    }
    claims = verifier.verify(jwt.encode(payload, "secret-two", algorithm="HS256"))
    permission = claims.video.to_permission()
    assert permission.hidden and permission.can_update_metadata
    assert list(permission.can_publish_sources) == [models.TrackSource.MICROPHONE]
    assert claims.participant_kind == models.ParticipantInfo.Kind.AGENT


def test_webhook_token_verifies_with_official_receiver() -> None:
    body = b'{"event":"room_started"}'
    signed = create_token("key1", "secret-one", ttl_seconds=300, sha256=body_sha256(body))
    event = api.WebhookReceiver(api.TokenVerifier("key1", "secret-one")).receive(
        body.decode(), signed
    )
    assert event.event == "room_started"
