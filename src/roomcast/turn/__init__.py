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

The relayed leg uses real UDP sockets of the relay range, as coturn does, each sending only to
the node's media socket, rather than handing datagrams to the UDP mux under a synthetic relayed
address: the media plane then needs no change at all (transports send with `mux.udp.sendto` on
their per-packet path, where a check for relayed addresses would cost every packet, relayed or
not), the relay is reasoned about as any TURN server's, and relayed clients look like any UDP
client to ICE, consent and the forwarding plane. The cost, measured on loopback: about 12 µs of
the server's CPU per relayed packet per direction (ChannelData of 1200 bytes), some 80,000
packets a second per core. Only the UDP media port is a peer: relay candidates (UDP) pair with
UDP candidates only, and nothing listens for UDP on the ICE-TCP port.
"""
