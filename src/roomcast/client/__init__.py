"""Roomcast's own WebRTC + LiveKit client: what `roomcast load-test`, `bench/` and the tests drive.

peer.py    a WebRTC client peer (ICE, DTLS-SRTP, SRTP) that speaks SDP strings
ice.py     its I/O-free ICE agent (full, controlling): connectivity checks and nomination
sdp.py     the client's offers and answers, in the shape Chrome writes them
signal.py  a LiveKit signalling client (/rtc WebSocket, livekit-protocol messages)
media.py   synthetic opus and VP8 (simulcast) RTP senders, NACK cache, sender reports
vp8.py     VP8 bitstreams any decoder accepts, without an encoder
"""
