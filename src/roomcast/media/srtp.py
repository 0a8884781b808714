"""SRTP and SRTCP with the keys DTLS exported (RFC 5764), in the form the per-packet path wants.

`fast_protect` and `fast_unprotect` turn a pylibsrtp session into one plain callable each, so a
forwarded packet costs one Python call to protect and one to unprotect; `SecureChannel` hands
them out once keyed, and the transports keep them in a local attribute.
"""

from __future__ import annotations

from collections.abc import Callable

import pylibsrtp

Protect = Callable[[bytes], bytes]
Unprotect = Callable[[bytes], tuple[bytes, bool]]  # → (plain packet, is_rtcp)


def unprotect(session: pylibsrtp.Session, data: bytes) -> tuple[bytes, bool]:
    """SRTP or SRTCP on one rtcp-mux'd port → (plain packet, is_rtcp); raises pylibsrtp.Error.
    RFC 5761 §4 (`demux.is_rtcp`): payload type 64-95 is RTCP."""
    if 63 < (data[1] & 0x7F) < 96:
        return session.unprotect_rtcp(data), True
    return session.unprotect(data), False


def fast_unprotect(session: pylibsrtp.Session) -> Unprotect:
    """`unprotect(session, ·)` as one closure: no global lookups, no second call per packet."""
    unprotect_rtp, unprotect_rtcp = session.unprotect, session.unprotect_rtcp

    def unprotect(data: bytes) -> tuple[bytes, bool]:
        if 63 < (data[1] & 0x7F) < 96:  # demux.is_rtcp, inlined: this runs per packet
            return unprotect_rtcp(data), True
        return unprotect_rtp(data), False

    return unprotect


def fast_protect(session: pylibsrtp.Session) -> Protect:
    """`session.protect` without pylibsrtp's per-call allocation, type check and wrapper calls:
    about 1 µs of the ~7 µs a forwarded packet costs (bench/compare.py, fan-out 10-150). Uses
    pylibsrtp's own buffer and libsrtp binding; falls back to `session.protect` if those
    internals are not there. Raises pylibsrtp.Error like `protect` does."""
    try:
        from pylibsrtp._binding import ffi, lib

        srtp, cdata, buffer = session._srtp[0], session._cdata, session._buffer
        limit = len(cdata) - pylibsrtp.SRTP_MAX_TRAILER_LEN
    except (ImportError, AttributeError, TypeError):
        return session.protect
    length = ffi.new("int *")
    srtp_protect = lib.srtp_protect

    def protect(packet: bytes, _session: pylibsrtp.Session = session) -> bytes:
        # _session keeps the libsrtp context alive as long as this closure (ffi.gc frees it).
        size = len(packet)
        if size > limit:
            raise pylibsrtp.Error(f"RTP packet too long to protect ({size} bytes)")
        buffer[0:size] = packet
        length[0] = size
        status = srtp_protect(srtp, cdata, length)
        if status:
            raise pylibsrtp.Error(f"srtp_protect failed with status {status}")
        return buffer[0 : length[0]]

    return protect
