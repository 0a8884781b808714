"""The ICE-lite agent of a server transport: restarts and the remote address. No sockets.
(ICE restart under a live DTLS-SRTP connection: tests/unit/test_secure_channel.py.)"""

from __future__ import annotations

from roomcast.media.ice_lite import IceLiteAgent
from tests.secure_pair import SERVER_PWD, SERVER_UFRAG, binding_request


def test_our_own_restart_then_the_remote_follows_without_a_second_one() -> None:
    ice = IceLiteAgent(SERVER_UFRAG, SERVER_PWD)
    assert ice.set_remote_credentials("cli1", "pwd-1") is False  # the first: no restart
    assert ice.restart("srv2", "pwd-server-2") is None  # ours (a resume offer)
    assert ice.set_remote_credentials("cli2", "pwd-2") is False  # the answer follows it
    assert ice.set_remote_credentials("cli3", "pwd-3") is True  # a later one is theirs
    # A second restart before the first completed: the oldest ufrag is retired at once.
    assert ice.restart("srv3", "pwd-server-3", answering=True) == SERVER_UFRAG
    assert ice.previous_ufrag == "srv2"


def test_remote_address_is_the_first_checked_until_one_is_nominated() -> None:
    ice = IceLiteAgent(SERVER_UFRAG, SERVER_PWD)
    first, second = ("198.51.100.7", 1), ("198.51.100.7", 2)
    assert ice.handle(binding_request(SERVER_UFRAG, SERVER_PWD), first).authenticated
    assert ice.handle(binding_request(SERVER_UFRAG, SERVER_PWD), second).authenticated
    assert ice.remote_address == first
    nominated = binding_request(SERVER_UFRAG, SERVER_PWD, use_candidate=True)
    assert ice.handle(nominated, second).authenticated
    assert ice.remote_address == second
    wrong = ice.handle(binding_request(SERVER_UFRAG, "not-the-password-at-all"), first)
    assert not wrong.authenticated and wrong.response is not None  # 401, unsigned
    assert ice.remote_address == second


def test_checks_for_another_ufrag_are_dropped_unanswered() -> None:
    ice = IceLiteAgent(SERVER_UFRAG, SERVER_PWD)
    check = ice.handle(binding_request("someone-else", SERVER_PWD), ("192.0.2.9", 9))
    assert not check.authenticated and check.response is None
    assert ice.remote_address is None
