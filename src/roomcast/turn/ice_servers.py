"""`JoinResponse.ice_servers` and `ReconnectResponse.ice_servers`: the embedded TURN server with
credentials for this participant, the external TURN servers of `rtc.turn_servers`, and the STUN
servers of `rtc.stun_servers`, in that order, as livekit-server lists them.

Embedded TURN URLs: `turn:<node ip>:<udp_port>?transport=udp` and `…?transport=tcp` (TURN over
TCP on the same port number), and `turns:<domain>:<port>?transport=tcp` where the port is 443
behind a TLS-terminating load balancer (`external_tls`) and `tls_port` otherwise. External
servers: `turn:` or `turns:` (protocol tls) `<host>:<port>?transport=udp|tcp`, with their static
credentials or TURN REST API ones minted for the participant.
"""

from __future__ import annotations

import time

from livekit.protocol import rtc

from roomcast.config import Config

from .credentials import embedded_credentials, rest_api_credentials

LOAD_BALANCER_TLS_PORT = 443


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def embedded_urls(config: Config) -> list[str]:
    turn = config.turn
    if not turn.enabled:
        return []
    urls = []
    node = config.node_address or config.rtc.node_ip
    if turn.udp_port and node:
        where = f"{_host(node)}:{turn.udp_port}"
        urls += [f"turn:{where}?transport=udp", f"turn:{where}?transport=tcp"]
    if turn.tls_port:
        port = LOAD_BALANCER_TLS_PORT if turn.external_tls else turn.tls_port
        urls.append(f"turns:{turn.domain}:{port}?transport=tcp")
    return urls


def ice_servers(
    config: Config, participant_sid: str, now: float | None = None
) -> list[rtc.ICEServer]:
    """The ICE servers for one participant; credentials valid from `now` (Unix time)."""
    wall = time.time() if now is None else now
    servers = []
    urls = embedded_urls(config)
    if urls and config.keys:
        api_key, secret = next(iter(config.keys.items()))
        username, password = embedded_credentials(
            api_key, secret, participant_sid, config.turn.ttl_seconds, wall
        )
        servers.append(rtc.ICEServer(urls=urls, username=username, credential=password))
    for server in config.rtc.turn_servers:
        scheme = "turns" if server.protocol == "tls" else "turn"
        transport = "udp" if server.protocol == "udp" else "tcp"
        if server.secret:
            username, credential = rest_api_credentials(
                server.secret, participant_sid, server.ttl, wall
            )
        else:
            username, credential = server.username, server.credential
        url = f"{scheme}:{_host(server.host)}:{server.port}?transport={transport}"
        servers.append(rtc.ICEServer(urls=[url], username=username, credential=credential))
    if config.rtc.stun_servers:
        servers.append(rtc.ICEServer(urls=config.rtc.stun_servers))
    return servers
