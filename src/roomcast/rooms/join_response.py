"""The first message of a session (`JoinResponse`) and of a resume (`ReconnectResponse`).

Builders: the room, the participant and the node's settings in, protobufs out (the wall clock
too, for the TURN credentials in `ice_servers`, turn/ice_servers.py). Field
choices are explained in docs/protocol/02-join-and-transports.md and
docs/protocol/07-reconnect-ping-leave.md.
"""

from __future__ import annotations

import secrets

from livekit.protocol import models, rtc

from roomcast import LIVEKIT_COMPATIBLE_VERSION, PROTOCOL_VERSION, __version__
from roomcast.config import Config
from roomcast.rooms.participant import Participant
from roomcast.rooms.room import Room
from roomcast.turn.ice_servers import ice_servers

PING_INTERVAL = 5  # seconds, as LiveKit (the Rust SDK needs it non-zero)
PING_TIMEOUT = 15


def join_response(
    config: Config,
    node_id: str,
    room: Room,
    participant: Participant,
    *,
    subscriber_primary: bool,
) -> rtc.JoinResponse:
    others = [
        p.to_proto() for p in room.live_participants() if p is not participant and not p.hidden
    ]
    return rtc.JoinResponse(
        room=room.to_proto(),
        participant=participant.to_proto(),
        other_participants=others,
        server_version=LIVEKIT_COMPATIBLE_VERSION,
        server_info=models.ServerInfo(
            edition=models.ServerInfo.Edition.Standard,
            version=LIVEKIT_COMPATIBLE_VERSION,
            protocol=PROTOCOL_VERSION,
            debug_info=f"roomcast {__version__}",
            region=config.region,
            node_id=node_id,
        ),
        ice_servers=ice_servers(config, participant.sid),
        subscriber_primary=subscriber_primary,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
        enabled_publish_codecs=[models.Codec(mime=m) for m in room.settings.enabled_codecs],
        sif_trailer=secrets.token_bytes(32),
        fast_publish=False,
    )


def reconnect_response(
    config: Config, node_id: str, participant: Participant
) -> rtc.ReconnectResponse:
    # Fresh TURN credentials: the resume may need a relay the first join did not.
    return rtc.ReconnectResponse(
        ice_servers=ice_servers(config, participant.sid),
        server_info=models.ServerInfo(
            version=LIVEKIT_COMPATIBLE_VERSION, protocol=PROTOCOL_VERSION, node_id=node_id
        ),
        last_message_seq=participant.last_data_sequence,
    )
