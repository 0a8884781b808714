"""`/rtc/v1`'s join request: the `join_request` query parameter, decoded and bounded.

A v1 client puts everything `/rtc` takes as query parameters into one `JoinRequest` (client
info, connection settings, a resume's participant sid), adds its first publisher offer and
optionally metadata and attributes, wraps it in a `WrappedJoinRequest` (gzip-compressed or not)
and sends it base64url-encoded as `join_request` (docs/protocol/19-signalling-v1.md §1). The
token is checked before any of this is decoded (edge/rtc.py); here the decoding is bounded: the
parameter by the request line (edge/listener.py), the JoinRequest by `MAX_JOIN_REQUEST_BYTES`
after decompression, however small the compressed form.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import zlib

from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from roomcast.auth import Claims
from roomcast.errors import PermissionDeniedError
from roomcast.rooms.contracts import JoinOptions

# The largest JoinRequest decoded: metadata and attributes at their limits (512 + 64 KiB) and a
# first offer (media/sdp.py reads at most 256 KiB) fit; livekit-server's bound is 1 MiB too.
MAX_JOIN_REQUEST_BYTES = 1024 * 1024
_GZIP = zlib.MAX_WBITS | 16  # a gzip header and trailer around the deflate stream (RFC 1952)


class JoinRequestError(ValueError):
    """The `join_request` parameter cannot be used: HTTP 400 with this text."""


def decode_join_request(param: str) -> rtc.JoinRequest:
    """The JoinRequest inside `join_request=<base64url WrappedJoinRequest>` (padding optional).
    Raises JoinRequestError."""
    text = param.strip()
    try:
        padded = text + "=" * (-len(text) % 4)
        wrapped_bytes = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise JoinRequestError("cannot base64 decode wrapped join request") from None
    wrapped = rtc.WrappedJoinRequest()
    try:
        wrapped.ParseFromString(wrapped_bytes)
    except (DecodeError, RuntimeError):
        raise JoinRequestError("cannot unmarshal wrapped join request") from None
    if wrapped.compression == rtc.WrappedJoinRequest.GZIP:
        data = _gunzip(wrapped.join_request)
    elif wrapped.compression == rtc.WrappedJoinRequest.NONE:
        data = wrapped.join_request
    else:
        raise JoinRequestError(f"unknown join request compression {wrapped.compression}")
    if len(data) > MAX_JOIN_REQUEST_BYTES:
        raise JoinRequestError("join request too large")
    request = rtc.JoinRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, RuntimeError):
        raise JoinRequestError("cannot unmarshal join request") from None
    return request


def _gunzip(compressed: bytes) -> bytes:
    """Decompress at most MAX_JOIN_REQUEST_BYTES + 1 bytes (a larger result is refused without
    being produced)."""
    inflater = zlib.decompressobj(_GZIP)
    try:
        data = inflater.decompress(compressed, MAX_JOIN_REQUEST_BYTES + 1)
    except zlib.error:
        raise JoinRequestError("cannot read decompressed join request") from None
    if len(data) > MAX_JOIN_REQUEST_BYTES:
        raise JoinRequestError("join request too large")
    if not inflater.eof:
        raise JoinRequestError("cannot read decompressed join request: truncated")
    return data


def join_options_from_request(request: rtc.JoinRequest, remote: str) -> JoinOptions:
    """What `/rtc` reads from its query string, from the JoinRequest; the client address is
    ours to say, whatever the client wrote."""
    info = models.ClientInfo()
    info.CopyFrom(request.client_info)
    info.address = remote
    settings = request.connection_settings
    return JoinOptions(
        client_info=info,
        auto_subscribe=settings.auto_subscribe,
        adaptive_stream=settings.adaptive_stream,
        reconnect=request.reconnect,
        reconnect_sid=request.participant_sid if request.reconnect else "",
    )


def claims_with_join_request(claims: Claims, request: rtc.JoinRequest) -> Claims:
    """The token's claims with the JoinRequest's metadata and attributes, which only a token
    allowed to update its own metadata may set (as `canUpdateOwnMetadata` on a live
    participant). Attributes are added or replaced, never removed (an empty value is skipped,
    but still needs the permission, as livekit-server asks). Raises PermissionDeniedError."""
    if not request.metadata and not request.participant_attributes:
        return claims
    if not claims.video.effective_can_update_own_metadata:
        raise PermissionDeniedError()
    attributes = {k: v for k, v in request.participant_attributes.items() if v}
    return dataclasses.replace(
        claims,
        metadata=request.metadata or claims.metadata,
        attributes={**claims.attributes, **attributes},
    )
