"""The embedded TURN server (RFC 8656) and the ICE servers handed to clients.

Clients whose UDP is blocked (or everything but one TCP port) relay through it to this node's
own media port, and only there: it is not an open relay. Configured as livekit-server's `turn:`
section (config_turn.py); credentials are minted per participant in JoinResponse and
ReconnectResponse (`ice_servers`).

credentials.py   embedded (per participant) and TURN REST API credentials
ice_servers.py   JoinResponse/ReconnectResponse ice_servers: embedded, rtc.turn_servers, STUN
wire.py          ChannelData, TCP framing, Data indications, raw attributes (no I/O)
auth.py          long-term credentials: realm, stateless nonces, MESSAGE-INTEGRITY (no I/O)
allocation.py    one allocation: lifetime, permissions, channels, per-packet relaying (no I/O)
core.py          TurnCore: requests, quotas, lifetimes, fed messages and time (no I/O)
sockets.py       the TURN UDP/TCP/TLS ports and the relay sockets (the I/O edge)
service.py       TurnServer: ports from the config, the expiry timer; started by server.py
metrics.py       the TURN collector for /metrics

Only rooms/join_response.py (ice_servers) and server.py (TurnServer, TurnCollector) use it.
"""
