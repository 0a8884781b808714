"""`/rtc/v1`'s `join_request` parameter: decoding as the SDKs encode it, and its bounds
(edge/join_request.py, docs/protocol/19-signalling-v1.md §1)."""

from __future__ import annotations

import base64
import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st
from livekit.protocol import models, rtc

from roomcast.client.signal import join_request, wrap_join_request
from roomcast.edge.join_request import (
    MAX_JOIN_REQUEST_BYTES,
    JoinRequestError,
    claims_with_join_request,
    decode_join_request,
    join_options_from_request,
)
from roomcast.errors import PermissionDeniedError
from tests.fakes import claims_for


def wrapped(payload: bytes, compression: int, *, padded: bool = True) -> str:
    data = rtc.WrappedJoinRequest(compression=compression, join_request=payload)  # type: ignore[arg-type]
    text = base64.urlsafe_b64encode(data.SerializeToString()).decode()
    return text if padded else text.rstrip("=")


def sample() -> rtc.JoinRequest:
    request = rtc.JoinRequest(
        client_info=models.ClientInfo(
            sdk=models.ClientInfo.SDK.JS, version="2.23.0", protocol=16, address="10.0.0.1"
        ),
        connection_settings=rtc.ConnectionSettings(auto_subscribe=True, adaptive_stream=True),
        add_track_requests=[rtc.AddTrackRequest(cid="mic", type=models.TrackType.AUDIO)],
        reconnect=False,
    )
    request.publisher_offer.CopyFrom(rtc.SessionDescription(type="offer", sdp="v=0\r\n", id=1))
    return request


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("compression", [rtc.WrappedJoinRequest.NONE, rtc.WrappedJoinRequest.GZIP])
def test_both_compressions_with_or_without_padding(compression: int, padded: bool) -> None:
    payload = sample().SerializeToString()
    if compression == rtc.WrappedJoinRequest.GZIP:
        payload = gzip.compress(payload)
    assert decode_join_request(wrapped(payload, compression, padded=padded)) == sample()


def test_roomcasts_own_client_round_trips() -> None:
    request = join_request(auto_subscribe=False, adaptive_stream=True)
    assert decode_join_request(wrap_join_request(request)) == request


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("%%%", "cannot base64 decode"),
        (base64.urlsafe_b64encode(b"\xff\xff\xff").decode(), "cannot unmarshal wrapped"),
        (wrapped(b"\x0a\xff", rtc.WrappedJoinRequest.NONE), "cannot unmarshal join request"),
        (wrapped(b"not gzip", rtc.WrappedJoinRequest.GZIP), "cannot read decompressed"),
        (wrapped(gzip.compress(b"x" * 100)[:-12], rtc.WrappedJoinRequest.GZIP), "truncated"),
        (wrapped(b"", 7), "unknown join request compression"),
    ],
)
def test_unreadable_join_requests_say_why(param: str, message: str) -> None:
    with pytest.raises(JoinRequestError, match=message):
        decode_join_request(param)


def test_decompressed_size_is_bounded_however_small_the_compressed_form() -> None:
    bomb = gzip.compress(b"\0" * (64 * MAX_JOIN_REQUEST_BYTES))  # 64 MiB of zeros: ~64 KiB
    assert len(bomb) < MAX_JOIN_REQUEST_BYTES // 8
    with pytest.raises(JoinRequestError, match="too large"):
        decode_join_request(wrapped(bomb, rtc.WrappedJoinRequest.GZIP))
    plain = b"\0" * (MAX_JOIN_REQUEST_BYTES + 1)
    with pytest.raises(JoinRequestError, match="too large"):
        decode_join_request(wrapped(plain, rtc.WrappedJoinRequest.NONE))


@given(st.text(max_size=200))
def test_garbage_is_a_join_request_error_and_nothing_else(text: str) -> None:
    try:
        decode_join_request(text)
    except JoinRequestError:
        pass


def test_options_come_from_the_join_request_and_the_address_from_us() -> None:
    options = join_options_from_request(sample(), "192.0.2.7")
    assert options.client_info.sdk == models.ClientInfo.SDK.JS
    assert options.client_info.version == "2.23.0" and options.client_info.protocol == 16
    assert options.client_info.address == "192.0.2.7"
    assert options.auto_subscribe and options.adaptive_stream
    assert not options.reconnect and options.reconnect_sid == ""
    resume = rtc.JoinRequest(reconnect=True, participant_sid="PA_1")
    options = join_options_from_request(resume, "192.0.2.7")
    assert options.reconnect and options.reconnect_sid == "PA_1"
    assert not options.auto_subscribe  # no connection settings: as livekit-server reads them


def test_metadata_and_attributes_need_can_update_own_metadata() -> None:
    request = rtc.JoinRequest(metadata="m", participant_attributes={"a": "1", "gone": ""})
    plain = claims_for("ann")
    with pytest.raises(PermissionDeniedError):
        claims_with_join_request(plain, request)
    assert claims_with_join_request(plain, rtc.JoinRequest()) is plain
    with pytest.raises(PermissionDeniedError):  # even an attribute that changes nothing
        claims_with_join_request(plain, rtc.JoinRequest(participant_attributes={"gone": ""}))
    allowed = claims_for("ann", can_update_own_metadata=True)
    allowed = claims_with_join_request(claims_for("ann", can_update_own_metadata=True), request)
    assert allowed.metadata == "m"
    assert dict(allowed.attributes) == {"a": "1"}  # an empty value never removes one
