"""Where the embedded TURN's relay sockets bind and send (turn/service.py `media_peer`)."""

from __future__ import annotations

from roomcast.turn.service import MediaSocket, media_peer


def test_a_media_socket_on_one_address_is_the_peer_and_the_relay_address() -> None:
    peer, relay_host = media_peer(MediaSocket("127.0.0.1", 7882, "203.0.113.10"))
    assert relay_host == "127.0.0.1" and peer.local == ("127.0.0.1", 7882)
    assert peer.public_ips == {"203.0.113.10", "127.0.0.1"}
    assert peer.allowed(("203.0.113.10", 7882)) and not peer.allowed(("203.0.113.10", 7881))


def test_on_all_addresses_relays_bind_the_advertised_ip_when_it_is_local() -> None:
    peer, relay_host = media_peer(MediaSocket("0.0.0.0", 7882, "127.0.0.1"))
    assert relay_host == "127.0.0.1" and peer.local == ("127.0.0.1", 7882)
    assert peer.public_ips == {"127.0.0.1"}


def test_behind_1_to_1_nat_relays_reach_the_media_socket_over_loopback() -> None:
    peer, relay_host = media_peer(MediaSocket("0.0.0.0", 7882, "203.0.113.10"))  # not local
    assert relay_host == "127.0.0.1" and peer.local == ("127.0.0.1", 7882)
    assert peer.ip_allowed("203.0.113.10") and not peer.ip_allowed("127.0.0.1")
