"""ICE-lite responder fed with Binding requests built the way libwebrtc builds them."""

from __future__ import annotations

import struct

import pytest
from aioice import stun

from roomcast.media.stun import (
    PWD_LENGTH,
    UFRAG_LENGTH,
    IceLiteResponder,
    local_ufrag_of,
    parse_stun,
    random_ice_string,
)

OUR_UFRAG = "srvUfrag"
OUR_PWD = "serverPasswordOf24Chars0"
ADDR = ("192.0.2.7", 54321)


def binding_request(
    *,
    username: str = f"{OUR_UFRAG}:cli1",
    key: str = OUR_PWD,
    use_candidate: bool = True,
    controlled: bool = False,
) -> bytes:
    """USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = username
    request.attributes["PRIORITY"] = 1853824767
    if controlled:
        request.attributes["ICE-CONTROLLED"] = 0x1122334455667788
    else:
        request.attributes["ICE-CONTROLLING"] = 0x1122334455667788
    if use_candidate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(key.encode())  # also appends FINGERPRINT
    return bytes(request)


def handle(data: bytes) -> tuple[stun.Message, bytes | None, bool, bool]:
    message = parse_stun(data)
    assert message is not None
    result = IceLiteResponder(OUR_UFRAG, OUR_PWD).handle(message, ADDR)
    return message, result.response, result.authenticated, result.use_candidate


def test_success_response_has_mapped_address_integrity_and_fingerprint() -> None:
    request, raw, authenticated, use_candidate = handle(binding_request())
    assert authenticated and use_candidate
    assert raw is not None
    response = stun.parse_message(raw)  # raises if FINGERPRINT is wrong
    assert response.message_class == stun.Class.RESPONSE
    assert response.message_method == stun.Method.BINDING
    assert response.transaction_id == request.transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == ADDR
    assert response.check_message_integrity(OUR_PWD.encode())
    assert "FINGERPRINT" in response.attributes
    assert list(response.attributes)[-2:] == ["MESSAGE-INTEGRITY", "FINGERPRINT"]


def test_first_check_without_use_candidate_is_authenticated() -> None:
    # libwebrtc uses regular nomination: the first checks carry no USE-CANDIDATE
    # (docs/protocol/15-interop-findings.md).
    _, raw, authenticated, use_candidate = handle(binding_request(use_candidate=False))
    assert raw is not None and authenticated and not use_candidate


def test_controlled_peer_is_still_answered() -> None:
    _, raw, authenticated, _ = handle(binding_request(controlled=True))
    assert raw is not None and authenticated


def test_bad_integrity_gets_401_without_integrity() -> None:
    request, raw, authenticated, _ = handle(binding_request(key="not-the-server-password!"))
    assert not authenticated
    assert raw is not None
    response = stun.parse_message(raw)
    assert response.message_class == stun.Class.ERROR
    assert response.transaction_id == request.transaction_id
    assert response.error_code == 401
    assert "MESSAGE-INTEGRITY" not in response.attributes
    assert "FINGERPRINT" in response.attributes


def test_missing_integrity_gets_400() -> None:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{OUR_UFRAG}:cli1"
    request.add_fingerprint()
    _, raw, authenticated, _ = handle(bytes(request))
    assert not authenticated and raw is not None
    assert stun.parse_message(raw).error_code == 400


def test_unknown_ufrag_is_dropped() -> None:
    _, raw, authenticated, _ = handle(binding_request(username="someoneElse:cli1"))
    assert raw is None and not authenticated


@pytest.mark.parametrize("username", ["", OUR_UFRAG, f":{OUR_UFRAG}"])
def test_username_without_our_fragment_first_is_dropped(username: str) -> None:
    message = parse_stun(binding_request(username=username))
    assert message is not None
    assert local_ufrag_of(message) is None
    assert IceLiteResponder(OUR_UFRAG, OUR_PWD).handle(message, ADDR).response is None


def test_responses_and_indications_are_not_answered() -> None:
    for message_class in (stun.Class.RESPONSE, stun.Class.INDICATION):
        message = stun.Message(message_method=stun.Method.BINDING, message_class=message_class)
        message.attributes["USERNAME"] = f"{OUR_UFRAG}:cli1"
        message.add_message_integrity(OUR_PWD.encode())
        parsed = parse_stun(bytes(message))
        assert parsed is not None
        assert IceLiteResponder(OUR_UFRAG, OUR_PWD).handle(parsed, ADDR).response is None


def test_local_ufrag_routing_key() -> None:
    message = parse_stun(binding_request())
    assert message is not None and local_ufrag_of(message) == OUR_UFRAG


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01",
        binding_request()[:19],  # shorter than the header
        binding_request()[:-4],  # truncated: length field disagrees
        b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x00\x06\x00\x40abcd",  # attr overrun
        b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12) + b"\x00\x06\x00\x00",  # empty USERNAME
        b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x00\x06\x00\x02\xff\xfe\x00\x00",
        bytes(range(256)),
    ],
)
def test_truncated_or_garbage_input_never_raises(data: bytes) -> None:
    message = parse_stun(data)
    if message is not None:  # well-formed but unusable: never answered
        assert IceLiteResponder(OUR_UFRAG, OUR_PWD).handle(message, ADDR).response is None


def test_corrupted_fingerprint_is_rejected() -> None:
    data = bytearray(binding_request())
    data[-1] ^= 0xFF
    assert parse_stun(bytes(data)) is None


def test_tampered_body_with_valid_fingerprint_fails_integrity() -> None:
    data = bytearray(binding_request(use_candidate=False))
    priority = data.index(b"\x00\x24\x00\x04") + 4  # PRIORITY value
    data[priority] ^= 0x01
    body = bytes(data[:-8])  # re-seal FINGERPRINT so only MESSAGE-INTEGRITY can notice
    resealed = body + struct.pack("!HHI", 0x8028, 4, stun.message_fingerprint(body))
    _, raw, authenticated, _ = handle(resealed)
    assert not authenticated
    assert raw is not None and stun.parse_message(raw).error_code == 401


def test_random_credentials_are_ice_chars_of_the_required_length() -> None:
    ufrag, pwd = random_ice_string(UFRAG_LENGTH), random_ice_string(PWD_LENGTH)
    assert len(ufrag) >= 4 and len(pwd) >= 22
    assert ufrag.isalnum() and pwd.isalnum() and ufrag.isascii() and pwd.isascii()
    assert random_ice_string(PWD_LENGTH) != pwd
