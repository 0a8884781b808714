"""LiveKit's packet trailer: frame metadata (user timestamp, frame id) that the SDKs append to
the last RTP payload of a frame when a track is published with `TrackInfo.packet_trailer_features`
(LiveKit `PacketTrailerFeature`). It travels inside the payload, so the plane forwards it as it
is; only subscribers that did not announce `ClientInfo.Capability.CAP_PACKET_TRAILER` get it cut
off, as their decoders would see it as part of the frame.

Layout of the envelope at the very end of the payload: ... trailer body, one byte holding the
trailer's total length XOR 0xFF, then the magic "LKTS".
"""

from __future__ import annotations

MAGIC = b"LKTS"
ENVELOPE_SIZE = 5  # length byte + magic


def trailer_length(data: bytes, start: int, end: int) -> int:
    """Bytes of trailer at the end of the payload data[start:end], 0 if there is none."""
    size = end - start
    if size < ENVELOPE_SIZE or data[end - 4 : end] != MAGIC:
        return 0
    length = data[end - 5] ^ 0xFF
    if length < ENVELOPE_SIZE or length > size:
        return 0
    return length
