"""`roomcast load-test`: synthetic publishers and subscribers on Roomcast's own media stack.

peer.py         a WebRTC client peer (ICE, DTLS-SRTP, SRTP) speaking SDP strings
ice.py, sdp.py  its I/O-free parts: ICE checks (full agent), client offers and answers
signal.py       a LiveKit signalling client (/rtc WebSocket, livekit-protocol messages)
media.py        synthetic opus and VP8 (simulcast) RTP senders, NACK cache, sender reports
vp8.py          VP8 bitstreams any decoder accepts, without an encoder
participant.py  one simulated participant; runner.py the test; report.py its tables; cli.py flags
"""
