"""A transport's SRTP as the native engine holds it (media/native_plane.py): keyed there while
the transport is connected over UDP, taken back otherwise (ICE-TCP is Python's). While keyed,
every RTP packet to the transport goes out through the engine, Python's own (`send_rtp`:
tracks the engine does not forward) included: one SRTP context per direction, and one place
to number packets with transport-wide sequence numbers. SRTCP stays with Python's session."""

from __future__ import annotations

from .dtls import SrtpKeys
from .ice_lite import Address
from .native_tracks import Engine


class NativeSrtp:
    """One transport's entry in the engine: `native_id` (-1 without an engine)."""

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine
        self.native_id = -1 if engine is None else engine.add_transport()
        self.keyed = False

    def update(self, connected: bool, address: Address | None, keys: SrtpKeys | None) -> None:
        """Follow the transport: keys and address while connected over UDP, none otherwise."""
        engine, native_id = self.engine, self.native_id
        if engine is None or native_id < 0:
            return
        if connected and isinstance(address, tuple) and keys is not None:
            host, port = address[0], address[1]
            if self.keyed:
                engine.set_address(native_id, host, port)
            else:
                profile = keys.profile.libsrtp_profile
                engine.key_transport(native_id, host, port, profile, keys.local, keys.remote)
                self.keyed = True
        elif self.keyed:
            engine.unkey_transport(native_id)
            self.keyed = False

    def send_rtp(self, packet: bytes) -> bool:
        """Protect and send on the engine (only while `keyed`)."""
        assert self.engine is not None
        return self.engine.send_rtp(self.native_id, packet)

    def numbered(self, packet: bytes) -> bytes:
        """`packet` with the transport's next transport-wide number, when the engine keeps
        them (while not `keyed`: what the engine sends itself it numbers itself)."""
        if self.engine is None or self.native_id < 0:
            return packet
        return self.engine.number(self.native_id, packet)

    def close(self) -> None:
        if self.engine is not None and self.native_id >= 0:
            self.engine.remove_transport(self.native_id)
            self.native_id = -1
            self.keyed = False
