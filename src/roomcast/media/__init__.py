"""Media plane: the server-side WebRTC transport built from parts, and the forwarding plane.

`udp_mux.UdpMux` owns the one UDP socket and demultiplexes it (`demux`, RFC 7983) to
`PeerTransport`s, thin asyncio adapters over I/O-free parts that the client peer
(`roomcast.client.peer`) shares:
  demux.py           which protocol a datagram carries, from its first byte (RFC 7983 §7)
  ice_lite.py        the ICE-lite agent of one transport: credentials, restarts, remote address
  stun.py            STUN parsing and the Binding responder (`IceLiteResponder`)
  secure_channel.py  one DTLS-SRTP connection: handshake, fingerprint check, SRTP, consent
  dtls.py            the DTLS endpoint over OpenSSL memory BIOs and DTLS-SRTP keying
  srtp.py            SRTP/SRTCP protect and unprotect as per-packet callables
  sctp.py            data channels over aiortc's SCTP, behind our limits:
  sctp_packet.py     SCTP packet and chunk codec (RFC 9260 §3)
  sctp_guard.py      receive limits checked before aiortc sees a packet (window, held bytes)
  sctp_backlog.py    send backlog policy: drop lossy, disconnect a reader that never drains
  transport.py       `PeerTransport`, the asyncio adapter of one PeerConnection
  tcp_framing.py     ICE over TCP: RFC 4571 framing and the per-connection send policy
  tcp_mux.py         the ICE-TCP port (RFC 6544 passive candidates); connections are addresses
The forwarding plane (`forwarding_plane.ForwardingPlane`) feeds each published `uptrack.UpTrack`
to its subscribers' `downtrack.DownTrack`s, which the uptrack sees as `track_sender.TrackSender`.
Scalable video in one stream (VP9 SVC, AV1 with Dependency Descriptors) goes to
`svc_downtrack.SvcDownTrack`s instead, which keep each subscriber's layers:
  codecs.py              keyframes and the VP8 descriptor for every codec kind
  vp9.py                 VP9 payload descriptor and the per-subscriber layer choice
  dependency_descriptor.py  AV1's Dependency Descriptor extension: parse and write
  av1.py                 the descriptor reader of a stream and the per-subscriber decode target
  svc_layers.py          a stream's live spatial layers and temporal frame rates
  packet_trailer.py      LiveKit's frame metadata trailer, cut for subscribers that cannot read it

The native forwarding plane (`native_plane.NativeForwardingPlane`, the C engine built from
native/ into `_native`) runs the per-packet path of every track (audio, simulcast and scalable
video; `native_tracks.offloadable`) without the GIL: one
receive thread (recvmmsg, SRTP unprotect, parse, routing, the publisher's NACK and arrival
bookkeeping) and `rtc.forwarding_threads` sender threads that share every room's fan-out, each
owning a set of subscriber transports (their rewrite, SRTP protect, transport-wide numbers,
RTX, sendmmsg); with one, the receive thread sends itself:
  native_plane.py    choosing the plane, the plane's face, engine events
  native_tracks.py   `NativeUpTrack` / `NativeDownTrack` / `NativeSvcDownTrack`: Python's
                     decisions pushed, counters pulled
  native_srtp.py     a transport's SRTP keyed in the engine while connected over UDP

Congestion control and connection quality, I/O-free (fed feedback and the time):
  twcc.py           transport-cc feedback codec; `TwccRecorder` (publishers get feedback);
                    `TransportWide` (a subscriber's transport-wide numbers and what was sent)
  nack.py           NACKs towards publishers: what is missing, when to ask again
  bwe.py            a subscriber's downlink estimate (delay trend, loss, probes)
  allocator.py      which layer of each of a subscriber's video tracks fits the estimate
  downlink.py       one subscriber: feedback in, estimate, allocation, probe padding
  quality.py, track_quality.py   connection quality scores of tracks and participants
The allocator decides; the per-packet path only carries out `DownTrack.allowed` (a ceiling on
the layer, or PAUSED) and, for every packet it sends a subscriber, takes the next transport-wide
number from the subscriber's `TransportWide` and records (number, send time, size) under it,
then calls `TransportWide.pad(now)` while `padding` is set (a probe runs). Retransmissions
(from the uptrack's cache) and probe padding go on the subscriber's RTX stream when it
negotiated one (RFC 4588), numbered the same way. On the native plane the engine does all of
this for a transport it sends on: it numbers every packet (its own and Python's, one counter
per transport), keeps the send records that `native_tracks.NativeTransportWide.refresh` copies
for the downlink, pads during a probe (`Engine.start_probe`), records the arrival of every
RTP packet a publisher sends it, offloaded track or not, as it reads it (pulled into the
`TwccRecorder` before each feedback), and keeps the NACK bookkeeping of offloaded tracks (the
twin of nack.py).

Offer/answer: `sdp` parses and writes descriptions (values in `sdp_fields`, attribute parsers
in `sdp_attributes`); `jsep` holds what the server and the client (roomcast.client.sdp) share;
`publisher_answer` and `subscriber_offer` are the server's two role policies.
"""
