"""Media plane: the server-side WebRTC transport built from parts.

`transport.UdpMux` owns the one UDP socket and demultiplexes it (RFC 7983) to `PeerTransport`s:
ICE-lite (`stun`), DTLS + SRTP keying (`dtls`) and data channels over aiortc's SCTP (`sctp`).

Offer/answer: `sdp` parses and writes descriptions (values in `sdp_fields`, attribute parsers
in `sdp_attributes`); `jsep` holds what the server and the client (roomcast.client.sdp) share;
`publisher_answer` and `subscriber_offer` are the server's two role policies.
"""
