"""srtp.fast_protect: byte-for-byte what pylibsrtp's Session.protect produces."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest

from roomcast.media.srtp import fast_protect

PROFILES = [
    (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
]


def _session(profile: int, key: bytes, ssrc_type: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile))


def _packet(seq: int, size: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0xABCD) + os.urandom(size - 12)


@pytest.mark.parametrize(("profile", "key_size"), PROFILES)
def test_same_bytes_as_session_protect(profile: int, key_size: int) -> None:
    key = os.urandom(key_size)
    out = pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    fast = fast_protect(_session(profile, key, out))
    reference = _session(profile, key, out)
    receiver = _session(profile, key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    for seq in range(20):
        packet = _packet(seq, 100 + 50 * seq)
        protected = fast(packet)
        assert protected == reference.protect(packet)
        assert receiver.unprotect(protected) == packet


def test_too_long_and_replayed_packets_raise_srtp_errors() -> None:
    profile, key_size = PROFILES[0]
    fast = fast_protect(_session(profile, os.urandom(key_size), pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    with pytest.raises(pylibsrtp.Error):
        fast(_packet(1, 1500))
    fast(_packet(2, 200))
    with pytest.raises(pylibsrtp.Error):  # libsrtp refuses to protect the same index twice
        fast(_packet(2, 200))


def test_falls_back_to_session_protect_without_pylibsrtp_internals() -> None:
    class Opaque:
        def protect(self, packet: bytes) -> bytes:
            return b"protected:" + packet

    session = Opaque()
    assert fast_protect(session)(b"x") == b"protected:x"  # type: ignore[arg-type]
