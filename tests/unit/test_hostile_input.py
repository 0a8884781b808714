"""Hostile input, fuzzed with hypothesis: every parser rejects cleanly, never crashes.

(RTP, RTCP, codecs and SDP have their own property tests next to their unit tests.)
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pylibsrtp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livekit.protocol import room as room_pb
from livekit.protocol import rtc

from roomcast.auth import AuthError, TokenVerifier
from roomcast.edge import twirp
from roomcast.media.dtls import DtlsCertificate, DtlsEndpoint, DtlsState
from roomcast.media.jsep import parse_candidate_init
from roomcast.media.sdp import SdpError
from roomcast.media.stun import IceLiteResponder, parse_stun

KEYS = {"key": "a-secret-long-enough-for-tests-0123456789"}
verifier = TokenVerifier(KEYS)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@FUZZ
@given(st.text(max_size=300))
def test_jwt_garbage_is_rejected(text: str) -> None:
    with pytest.raises(AuthError):
        verifier.verify(text)


@FUZZ
@given(
    st.dictionaries(
        st.text(max_size=10),
        st.one_of(
            st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3)
        ),
        max_size=6,
    ),
    st.sampled_from(["none", "HS256", "HS384", "RS256", ""]),
)
def test_unsigned_or_tampered_tokens_are_rejected(
    header_extra: dict[str, object], alg: str
) -> None:
    header = {"typ": "JWT", **header_extra, "alg": alg}
    payload = {"iss": "key", "exp": time.time() + 60, "video": {"roomAdmin": True, "room": "r"}}
    token = f"{b64(json.dumps(header, default=str).encode())}.{b64(json.dumps(payload).encode())}."
    with pytest.raises(AuthError):
        verifier.verify(token)  # alg=none / no signature: always refused
    with pytest.raises(AuthError):
        verifier.verify(token + b64(b"forged-signature"))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "sub",
                "name",
                "metadata",
                "attributes",
                "video",
                "sip",
                "roomConfig",
                "kind",
                "exp",
                "nbf",
            ]
        ),
        st.one_of(
            st.none(),
            st.integers(-(10**12), 10**12),
            st.text(max_size=40),
            st.lists(st.text(max_size=5), max_size=3),
            st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
        ),
        max_size=8,
    )
)
def test_odd_claims_verify_or_fail_cleanly(claims: dict[str, object]) -> None:
    payload = {"iss": "key", "exp": int(time.time()) + 60, **claims}
    try:
        token = jwt.encode(payload, KEYS["key"], algorithm="HS256")
    except (TypeError, ValueError):
        return
    try:
        verifier.verify(token)
    except AuthError:
        pass


def test_huge_token_is_refused_before_parsing() -> None:
    token = jwt.encode(
        {"iss": "key", "exp": time.time() + 60, "metadata": "x" * 100_000},
        KEYS["key"],
        algorithm="HS256",
    )
    with pytest.raises(AuthError, match="too long"):
        verifier.verify(token)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([twirp.PROTOBUF, twirp.JSON]))
def test_twirp_bodies_decode_or_are_malformed(body: bytes, content_type: str) -> None:
    message = room_pb.CreateRoomRequest()
    try:
        twirp.decode(body, content_type, message)
    except twirp.TwirpError as exc:
        assert exc.code == "malformed"


@FUZZ
@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_twirp_json_of_any_shape(value: object) -> None:
    message = room_pb.UpdateParticipantRequest()
    try:
        twirp.decode(json.dumps(value).encode(), twirp.JSON, message)
    except twirp.TwirpError as exc:
        assert exc.code == "malformed"


@FUZZ
@given(st.binary(max_size=600))
def test_signal_request_bytes_parse_or_raise_decode_error(data: bytes) -> None:
    from google.protobuf.message import DecodeError

    request = rtc.SignalRequest()
    try:
        request.ParseFromString(data)
    except DecodeError:
        return
    request.WhichOneof("message")  # a parsed message is always usable


@FUZZ
@given(st.text(max_size=300))
def test_trickle_candidate_init_garbage(text: str) -> None:
    try:
        parse_candidate_init(text)
    except SdpError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_stun_garbage_is_never_answered(data: bytes) -> None:
    message = parse_stun(data)
    if message is None:
        return
    result = IceLiteResponder("ufrag", "p" * 22).handle(message, ("127.0.0.1", 5000))
    assert not result.authenticated


CERT = DtlsCertificate.generate()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=5))
def test_dtls_garbage_records_fail_or_are_ignored(datagrams: list[bytes]) -> None:
    endpoint = DtlsEndpoint(CERT, server=True)
    endpoint.start()
    for datagram in datagrams:
        assert endpoint.feed(datagram) == []
    assert endpoint.state is not DtlsState.CONNECTED


@FUZZ
@given(st.binary(max_size=200))
def test_srtp_garbage_is_rejected(data: bytes) -> None:
    policy = pylibsrtp.Policy(
        key=bytes(30),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    session = pylibsrtp.Session(policy)
    for unprotect in (session.unprotect, session.unprotect_rtcp):
        with pytest.raises(pylibsrtp.Error):
            unprotect(data)
