"""Security review M2, performed: one spoofed ICE nomination must not reflect a subscriber's
media to a victim address (RFC 7675 §5.1: consent is per address, not per transport).

The attacker is a subscriber (Roomcast's own load-test participant) in a room where a publisher
sends audio and video. A second local socket stands in for the victim whose address the
attacker spoofs: it sends one authenticated Binding request with USE-CANDIDATE, signed with
the credentials from the server's offer. The attacker's client then stops nominating and keeps
sending its consent checks from its real socket, as in the review. Before the fix the victim
got all of the subscriber's media for as long as those checks went on.
"""

from __future__ import annotations

from roomcast.media.demux import PacketClass
from roomcast.server import Server
from tests.integration.hostile_client import reflect_media
from tests.integration.test_loadtest import config_for

WINDOW = 7.0  # s after the spoofed check: more than one consent interval (RFC 7675 §5.1: 4-6 s)


async def test_spoofed_nomination_does_not_reflect_media_to_a_victim(server: Server) -> None:
    config = config_for(
        server,
        room="refl",
        video_publishers=1,
        audio_publishers=1,
        subscribers=1,
        simulcast=False,
    )
    result = await reflect_media(config, WINDOW)
    assert result.error is None and result.connected, result.error
    victim = result.victim
    # The victim's address never answered the server's own check, so it got no media and no
    # DTLS at all: only the answer to the spoofed check and the one request that asked it.
    assert victim[PacketClass.RTP] == 0, victim
    assert victim[PacketClass.DTLS] == 0, victim
    assert victim[PacketClass.STUN] <= 2, victim
    # Media kept flowing to the address that did prove itself: audio alone is 50 packets/s.
    assert result.after - result.before > 40 * WINDOW * 0.5, (result.before, result.after)
