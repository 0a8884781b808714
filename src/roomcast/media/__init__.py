"""Media plane: the server-side WebRTC transport built from parts.

`transport.UdpMux` owns the one UDP socket and demultiplexes it (RFC 7983) to `PeerTransport`s:
ICE-lite (`stun`), DTLS + SRTP keying (`dtls`) and data channels over aiortc's SCTP (`sctp`).
"""
