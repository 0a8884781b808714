"""The ICE-lite agent of a server transport: restarts, and where it sends. No sockets.
(ICE restart, consent and address changes under a live DTLS-SRTP connection:
tests/unit/test_secure_channel.py.)"""

from __future__ import annotations

from aioice import stun

from roomcast.media.ice_lite import PRFLX_PRIORITY, PROBE_INTERVAL, IceLiteAgent
from roomcast.media.stun import IceLiteResponder, parse_stun
from tests.secure_pair import SERVER_ADDR, SERVER_PWD, SERVER_UFRAG, binding_request

CLIENT_UFRAG, CLIENT_PWD = "cli1", "client-password-0123456789"
FIRST, SECOND = ("198.51.100.7", 1), ("198.51.100.7", 2)


def check(*, use_candidate: bool = False, pwd: str = SERVER_PWD) -> stun.Message:
    return binding_request(SERVER_UFRAG, pwd, use_candidate=use_candidate)


def answer(probe: bytes, *, signed_with: str = CLIENT_PWD) -> stun.Message:
    """A success response to our check, signed as the client's ICE agent signs it (or not)."""
    request = parse_stun(probe)
    assert request is not None
    response = IceLiteResponder(CLIENT_UFRAG, CLIENT_PWD).handle(request, SERVER_ADDR).response
    assert response is not None
    message = parse_stun(response)
    assert message is not None and message.message_class == stun.Class.RESPONSE
    if signed_with != CLIENT_PWD:
        message.add_message_integrity(signed_with.encode())
        message = parse_stun(bytes(message))
        assert message is not None
    return message


def connected_agent() -> IceLiteAgent:
    ice = IceLiteAgent(SERVER_UFRAG, SERVER_PWD)
    ice.set_remote_credentials(CLIENT_UFRAG, CLIENT_PWD)
    first = ice.handle(check(), FIRST, 0.0)
    assert first.authenticated and first.consent and ice.remote_address == FIRST
    return ice


def test_our_own_restart_then_the_remote_follows_without_a_second_one() -> None:
    ice = IceLiteAgent(SERVER_UFRAG, SERVER_PWD)
    assert ice.set_remote_credentials("cli1", "pwd-1") is False  # the first: no restart
    assert ice.restart("srv2", "pwd-server-2") is None  # ours (a resume offer)
    assert ice.set_remote_credentials("cli2", "pwd-2") is False  # the answer follows it
    assert ice.set_remote_credentials("cli3", "pwd-3") is True  # a later one is theirs
    # A second restart before the first completed: the oldest ufrag is retired at once.
    assert ice.restart("srv3", "pwd-server-3", answering=True) == SERVER_UFRAG
    assert ice.previous_ufrag == "srv2"


def test_a_nominated_address_is_used_only_once_it_answers_our_check() -> None:
    ice = IceLiteAgent(SERVER_UFRAG, SERVER_PWD)
    assert ice.handle(check(), FIRST, 0.0).consent  # the first checked address: we send there
    other = ice.handle(check(), SECOND, 0.1)
    assert other.authenticated and not other.consent and other.probe is None
    # Nominated before the remote's credentials are known: nothing to check it with yet.
    nominated = ice.handle(check(use_candidate=True), SECOND, 0.2)
    assert nominated.authenticated and nominated.probe is None
    assert ice.remote_address == FIRST

    ice.set_remote_credentials(CLIENT_UFRAG, CLIENT_PWD)
    nominated = ice.handle(check(use_candidate=True), SECOND, 0.3)
    assert nominated.probe is not None and not nominated.consent
    assert ice.remote_address == FIRST and ice.probing == SECOND
    # Our check, as a controlled agent's (RFC 8445 §7.2.2, §7.1): signed with the client's pwd.
    probe = parse_stun(nominated.probe)
    assert probe is not None and probe.message_class == stun.Class.REQUEST
    assert probe.attributes["USERNAME"] == f"{CLIENT_UFRAG}:{SERVER_UFRAG}"
    assert probe.attributes["PRIORITY"] == PRFLX_PRIORITY
    assert "ICE-CONTROLLED" in probe.attributes and "USE-CANDIDATE" not in probe.attributes
    assert probe.check_message_integrity(CLIENT_PWD.encode())

    # An answer from anywhere but the address we asked, or not signed by the client, is no
    # proof (RFC 8445 §7.2.5.2.1) …
    assert not ice.handle_response(answer(nominated.probe), FIRST)
    assert not ice.handle_response(
        answer(nominated.probe, signed_with="not-the-client-password"), SECOND
    )
    assert ice.remote_address == FIRST
    # … nor is a nomination alone, however often repeated: one check per PROBE_INTERVAL.
    again = ice.handle(check(use_candidate=True), SECOND, 0.3 + PROBE_INTERVAL / 2)
    assert again.probe is None and ice.remote_address == FIRST
    retry = ice.handle(check(use_candidate=True), SECOND, 0.3 + PROBE_INTERVAL)
    assert retry.probe is not None
    assert not ice.handle_response(answer(nominated.probe), SECOND)  # superseded
    assert ice.handle_response(answer(retry.probe), SECOND)
    assert ice.remote_address == SECOND and ice.probing is None
    # From now on, checks from SECOND are consent and checks from FIRST are not.
    assert ice.handle(check(), SECOND, 1.0).consent
    assert not ice.handle(check(), FIRST, 1.0).consent
    wrong = ice.handle(check(pwd="not-the-password-at-all"), FIRST, 1.0)
    assert not wrong.authenticated and wrong.response is not None  # 401, unsigned
    assert ice.remote_address == SECOND


def test_an_error_response_or_a_renomination_of_the_current_pair_ends_the_check() -> None:
    ice = connected_agent()
    probe = ice.handle(check(use_candidate=True), SECOND, 1.0).probe
    assert probe is not None
    request = parse_stun(probe)
    assert request is not None
    error = stun.Message(stun.Method.BINDING, stun.Class.ERROR, request.transaction_id)
    error.attributes["ERROR-CODE"] = (401, "Unauthorized")
    assert not ice.handle_response(error, SECOND)
    assert ice.probing is None and ice.remote_address == FIRST
    assert not ice.handle_response(answer(probe), SECOND)  # too late: that check is over

    probe = ice.handle(check(use_candidate=True), SECOND, 2.0).probe
    assert probe is not None
    assert ice.handle(check(use_candidate=True), FIRST, 2.1).consent  # the controlling agent
    assert ice.probing is None  # went back to the pair we use: stop checking the other one
    assert not ice.handle_response(answer(probe), SECOND)
    assert ice.remote_address == FIRST


def test_checks_for_another_ufrag_are_dropped_unanswered() -> None:
    ice = IceLiteAgent(SERVER_UFRAG, SERVER_PWD)
    dropped = ice.handle(binding_request("someone-else", SERVER_PWD), ("192.0.2.9", 9), 0.0)
    assert not dropped.authenticated and dropped.response is None
    assert ice.remote_address is None
