"""STUN Binding for rtc.use_external_ip: the request, and reading the mapped address back."""

from __future__ import annotations

from aioice import stun

from roomcast.external_ip import _split, binding_request, mapped_address


def response_to(request: stun.Message, address: tuple[str, int]) -> bytes:
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = address
    return bytes(response)


def test_the_mapped_address_of_our_own_request_only() -> None:
    request = binding_request()
    assert mapped_address(response_to(request, ("203.0.113.7", 40000)), request) == "203.0.113.7"
    other = binding_request()
    assert mapped_address(response_to(other, ("198.51.100.1", 1)), request) is None
    assert mapped_address(b"not stun at all", request) is None
    assert mapped_address(bytes(request), request) is None  # a request is not an answer


def test_server_addresses_as_livekit_writes_them() -> None:
    assert _split("stun.l.google.com:19302") == ("stun.l.google.com", 19302)
    assert _split("stun:198.18.0.1:3478") == ("198.18.0.1", 3478)
    assert _split("[2001:db8::1]:3478") == ("2001:db8::1", 3478)
    assert _split("stun.example.com") == ("stun.example.com", 3478)
