"""Parsers of SDP attribute values (RFC 8866 §5.13 and the RFCs that define each attribute) into
the dataclasses of `sdp_fields`. Untrusted input only ever raises `SdpError` naming the line.

`parse_common_attribute` handles what may appear at session and media level alike;
`parse_media_attributes` handles every a= line of one m= section. `roomcast.media.sdp` splits a
description into lines and calls these.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from roomcast.media.sdp_fields import (
    DIRECTIONS,
    SETUP_ROLES,
    Attribute,
    Codec,
    Extmap,
    Fingerprint,
    MediaSection,
    Msid,
    Origin,
    Rid,
    SdpError,
    Simulcast,
    SimulcastRid,
    Ssrc,
    SsrcGroup,
    parse_uint,
)

# RFC 8866 §9: token = 1*(token-char); used for mids (RFC 5888 §4) and msid ids (RFC 8830 §2).
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_RID_ID = re.compile(r"[A-Za-z0-9_-]+")  # RFC 8851 §10: rid-id = 1*(alpha-numeric / "-" / "_")

NumberedAttribute = tuple[int, str, str | None]  # (line number, name, value or None)


class AttributeTarget(Protocol):
    """What a session and a media section both carry (SessionDescription, MediaSection)."""

    ice_ufrag: str | None
    ice_pwd: str | None
    ice_options: list[str]
    fingerprints: list[Fingerprint]
    setup: str | None
    direction: str | None
    extmap_allow_mixed: bool
    extmaps: list[Extmap]


# --- fields ------------------------------------------------------------------------------------


def split_attribute(value: str, number: int) -> tuple[str, str | None]:
    """`name:value` → (name, value); `name` → (name, None) (RFC 8866 §5.13)."""
    name, sep, rest = value.partition(":")
    if not name.strip():
        raise SdpError(f"attribute without a name: {value[:40]!r}", number)
    return name, (rest if sep else None)


def parse_origin(value: str, number: int) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(
            "o= needs 6 fields: username sess-id sess-version nettype addrtype addr", number
        )
    version = bounded_int(parts[2], number, "o= sess-version")
    return Origin(parts[0], parts[1], version, parts[3], parts[4], parts[5])


def tokens(
    value: str | None, number: int, name: str, *, exactly: int = 0, minimum: int = 0
) -> list[str]:
    """The space-separated values of a=<name>, checked for their number."""
    parts = (value or "").split()
    if exactly and len(parts) != exactly:
        raise SdpError(f"a={name} needs {exactly} value(s), got {len(parts)}", number)
    if len(parts) < minimum:
        raise SdpError(f"a={name} needs at least {minimum} value(s)", number)
    return parts


def flag(value: str | None, number: int, name: str) -> bool:
    """A property attribute (RFC 8866 §5.13): present, without a value."""
    if value is not None:
        raise SdpError(f"a={name} takes no value", number)
    return True


def bounded_int(text: str, number: int, what: str, low: int = 0, high: int = 2**64) -> int:
    value = parse_uint(text)
    if value is None or not low <= value <= high:
        raise SdpError(f"{what} must be a number from {low} to {high}, got {text[:20]!r}", number)
    return value


# --- session or media level --------------------------------------------------------------------

_CommonParser = Callable[[AttributeTarget, str, str | None, int], None]


def parse_common_attribute(
    target: AttributeTarget, number: int, name: str, value: str | None
) -> bool:
    """Attributes allowed at both levels. Returns False for any other name."""
    parser = _COMMON_PARSERS.get(name)
    if parser is None:
        return False
    parser(target, name, value, number)
    return True


def _ice_credential(target: AttributeTarget, name: str, value: str | None, number: int) -> None:
    (token,) = tokens(value, number, name, exactly=1)
    field_name = name.replace("-", "_")  # ice_ufrag, ice_pwd (RFC 8839 §5.4)
    if getattr(target, field_name) is not None:
        raise SdpError(f"more than one a={name}", number)
    setattr(target, field_name, token)


def _ice_options(target: AttributeTarget, name: str, value: str | None, number: int) -> None:
    target.ice_options += tokens(value, number, name)


def _fingerprint(target: AttributeTarget, name: str, value: str | None, number: int) -> None:
    algorithm, fingerprint = tokens(value, number, name, exactly=2)
    target.fingerprints.append(Fingerprint(algorithm, fingerprint))


def _setup(target: AttributeTarget, name: str, value: str | None, number: int) -> None:
    (role,) = tokens(value, number, name, exactly=1)
    if role not in SETUP_ROLES:
        raise SdpError(f"a=setup must be one of {', '.join(SETUP_ROLES)}", number)
    target.setup = role


def _direction(target: AttributeTarget, name: str, value: str | None, number: int) -> None:
    if target.direction is not None:
        raise SdpError(f"a={name} conflicts with a={target.direction}", number)
    target.direction = name if flag(value, number, name) else None


def _extmap_allow_mixed(target: AttributeTarget, name: str, value: str | None, number: int) -> None:
    target.extmap_allow_mixed = flag(value, number, name)


def _extmap(target: AttributeTarget, name: str, value: str | None, number: int) -> None:
    extmap = parse_extmap(value, number)
    if any(e.id == extmap.id for e in target.extmaps):
        raise SdpError(f"a=extmap id {extmap.id} is used twice (RFC 8285 §5)", number)
    target.extmaps.append(extmap)


_COMMON_PARSERS: dict[str, _CommonParser] = {
    "ice-ufrag": _ice_credential,
    "ice-pwd": _ice_credential,
    "ice-options": _ice_options,
    "fingerprint": _fingerprint,
    "setup": _setup,
    **dict.fromkeys(DIRECTIONS, _direction),
    "extmap-allow-mixed": _extmap_allow_mixed,
    "extmap": _extmap,
}


def parse_extmap(value: str | None, number: int) -> Extmap:
    parts = tokens(value, number, "extmap", minimum=2)
    id_text, _, direction = parts[0].partition("/")
    extmap_id = bounded_int(id_text, number, "a=extmap id", 1, 255)
    if direction and direction not in DIRECTIONS:
        raise SdpError(f"a=extmap direction {direction!r} is not one of {DIRECTIONS}", number)
    rest = (value or "").split(None, 2)
    return Extmap(extmap_id, parts[1], direction or None, rest[2] if len(rest) > 2 else None)


# --- media level -------------------------------------------------------------------------------

_MediaParser = Callable[[MediaSection, str, str | None, int], None]


def parse_media_attributes(section: MediaSection, attributes: list[NumberedAttribute]) -> None:
    """Every a= line of one m= section, in order; sets `section.codecs` in m= line order."""
    # Two passes: a=fmtp and a=rtcp-fb may come before the a=rtpmap they refer to.
    codecs: dict[int, Codec] = {}
    for number, name, value in attributes:
        if name == "rtpmap":
            codec = parse_rtpmap(value, number)
            if codec.payload_type in codecs:
                raise SdpError(f"a=rtpmap for payload type {codec.payload_type} twice", number)
            codecs[codec.payload_type] = codec
    for number, name, value in attributes:
        if name == "rtpmap" or parse_common_attribute(section, number, name, value):
            continue
        parser = _MEDIA_PARSERS.get(name)
        if name in ("fmtp", "rtcp-fb") and value is not None:
            _codec_attribute(section, codecs, number, name, value)
        elif parser is not None:
            parser(section, name, value, number)
        else:
            section.attributes.append(Attribute(name, value))
    order = {fmt: i for i, fmt in enumerate(section.fmts)}
    section.codecs = sorted(codecs.values(), key=lambda c: order.get(str(c.payload_type), 999))


def parse_rtpmap(value: str | None, number: int) -> Codec:
    # RFC 8866 §6.6: a=rtpmap:<payload type> <encoding name>/<clock rate>[/<parameters>]
    pt_text, encoding = tokens(value, number, "rtpmap", exactly=2)
    pieces = encoding.split("/")
    if len(pieces) not in (2, 3) or not pieces[0]:
        raise SdpError("a=rtpmap needs <encoding>/<clock rate>[/<channels>]", number)
    channels = (
        bounded_int(pieces[2], number, "a=rtpmap channels", 1, 255) if len(pieces) == 3 else None
    )
    return Codec(
        payload_type=bounded_int(pt_text, number, "a=rtpmap payload type", 0, 127),
        name=pieces[0],
        clock_rate=bounded_int(pieces[1], number, "a=rtpmap clock rate", 1, 2**32),
        channels=channels,
    )


def _codec_attribute(
    section: MediaSection, codecs: dict[int, Codec], number: int, name: str, value: str
) -> None:
    """a=fmtp (RFC 8866 §6.15) and a=rtcp-fb (RFC 4585 §4.2) of a payload type."""
    pt_text, _, rest = value.lstrip().partition(" ")
    payload_type = parse_uint(pt_text)
    codec = codecs.get(payload_type) if payload_type is not None else None
    if codec is None:  # "*" wildcard, or a payload type without a=rtpmap: keep as is
        section.attributes.append(Attribute(name, value))
    elif name == "fmtp":
        if codec.fmtp is not None:
            raise SdpError(f"a=fmtp for payload type {codec.payload_type} twice", number)
        codec.fmtp = rest.lstrip()
    elif not rest.split():
        raise SdpError("a=rtcp-fb needs a feedback type (RFC 4585 §4.2)", number)
    else:
        codec.rtcp_fb.append(" ".join(rest.split()))


def _mid(section: MediaSection, name: str, value: str | None, number: int) -> None:
    (mid,) = tokens(value, number, name, exactly=1)
    if section.mid is not None:
        raise SdpError("more than one a=mid in this media section", number)
    if not _TOKEN.fullmatch(mid):
        raise SdpError(f"a=mid {mid!r} is not a token (RFC 5888 §4)", number)
    section.mid = mid


def _candidate(section: MediaSection, name: str, value: str | None, number: int) -> None:
    if not value or not value.strip():
        raise SdpError("a=candidate is empty", number)
    section.candidates.append(f"candidate:{value}")


def _msid(section: MediaSection, name: str, value: str | None, number: int) -> None:
    ids = tokens(value, number, name, minimum=1)
    if len(ids) > 2:
        raise SdpError("a=msid is <stream id> [<track id>] (RFC 8830 §2)", number)
    section.msids.append(Msid(ids[0], ids[1] if len(ids) == 2 else None))


def _ssrc(section: MediaSection, name: str, value: str | None, number: int) -> None:
    # RFC 5576 §4.1: a=ssrc:<ssrc-id> <attribute>[:<value>]
    parts = (value or "").split(None, 1)
    if len(parts) != 2 or not parts[1].strip():
        raise SdpError("a=ssrc needs <ssrc> <attribute>[:<value>] (RFC 5576 §4.1)", number)
    ssrc_id = bounded_int(parts[0], number, "a=ssrc SSRC", 0, 2**32 - 1)
    attr_name, attr_value = split_attribute(parts[1], number)
    ssrc = next((s for s in section.ssrcs if s.ssrc == ssrc_id), None)
    if ssrc is None:
        ssrc = Ssrc(ssrc_id)
        section.ssrcs.append(ssrc)
    ssrc.attributes.append(Attribute(attr_name, attr_value))


def _ssrc_group(section: MediaSection, name: str, value: str | None, number: int) -> None:
    semantics, *ssrcs = tokens(value, number, name, minimum=2)
    group = [bounded_int(s, number, "a=ssrc-group SSRC", 0, 2**32 - 1) for s in ssrcs]
    section.ssrc_groups.append(SsrcGroup(semantics, group))


def _rid(section: MediaSection, name: str, value: str | None, number: int) -> None:
    parts = (value or "").split(None, 2)
    if len(parts) < 2:
        raise SdpError("a=rid needs <id> send|recv (RFC 8851 §10)", number)
    if not _RID_ID.fullmatch(parts[0]):
        raise SdpError(f"a=rid id {parts[0]!r} is not alphanumeric, '-' or '_'", number)
    if parts[1] not in ("send", "recv"):
        raise SdpError(f"a=rid direction must be send or recv, got {parts[1]!r}", number)
    if any(rid.id == parts[0] for rid in section.rids):
        raise SdpError(f"a=rid {parts[0]!r} appears twice (RFC 8851 §10)", number)
    section.rids.append(Rid(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))


def _simulcast(section: MediaSection, name: str, value: str | None, number: int) -> None:
    if section.simulcast is not None:
        raise SdpError("more than one a=simulcast in this media section", number)
    section.simulcast = parse_simulcast(value, number)


def parse_simulcast(value: str | None, number: int) -> Simulcast:
    # RFC 8853 §5.1: sc-value = ( sc-send [SP sc-recv] ) / ( sc-recv [SP sc-send] )
    parts = tokens(value, number, "simulcast", minimum=2)
    if len(parts) not in (2, 4):
        raise SdpError("a=simulcast is send|recv <streams> [send|recv <streams>]", number)
    result = Simulcast()
    for direction, text in zip(parts[::2], parts[1::2], strict=True):
        if direction not in ("send", "recv") or getattr(result, direction):
            raise SdpError(f"a=simulcast direction {direction!r} is invalid or repeated", number)
        text = text.removeprefix("rid=")  # pre-RFC drafts (old Firefox) wrote "send rid=a;b"
        streams: list[list[SimulcastRid]] = []
        for stream in text.split(";"):
            alternatives = []
            for rid in stream.split(","):
                rid_id = rid.removeprefix("~")
                if not _RID_ID.fullmatch(rid_id):
                    raise SdpError(f"a=simulcast rid {rid!r} is invalid (RFC 8853 §5.1)", number)
                alternatives.append(SimulcastRid(rid_id, rid.startswith("~")))
            streams.append(alternatives)
        setattr(result, direction, streams)
    return result


def _media_flag(section: MediaSection, name: str, value: str | None, number: int) -> None:
    # rtcp_mux (RFC 5761 §5.1.1), rtcp_rsize (RFC 5506 §5), end_of_candidates (RFC 8840 §8.2)
    setattr(section, name.replace("-", "_"), flag(value, number, name))


def _rtcp(section: MediaSection, name: str, value: str | None, number: int) -> None:
    if section.rtcp is not None:
        raise SdpError(f"more than one a={name} in this media section", number)
    tokens(value, number, name, minimum=1)
    section.rtcp = value


def _sctp_number(section: MediaSection, name: str, value: str | None, number: int) -> None:
    # sctp_port (RFC 8841 §5), max_message_size (RFC 8841 §6)
    field_name = name.replace("-", "_")
    if getattr(section, field_name) is not None:
        raise SdpError(f"more than one a={name} in this media section", number)
    (text,) = tokens(value, number, name, exactly=1)
    limit = 65535 if name == "sctp-port" else 2**64
    setattr(section, field_name, bounded_int(text, number, f"a={name}", 0, limit))


_MEDIA_PARSERS: dict[str, _MediaParser] = {
    "mid": _mid,
    "candidate": _candidate,
    "msid": _msid,
    "ssrc": _ssrc,
    "ssrc-group": _ssrc_group,
    "rid": _rid,
    "simulcast": _simulcast,
    "rtcp-mux": _media_flag,
    "rtcp-rsize": _media_flag,
    "end-of-candidates": _media_flag,
    "rtcp": _rtcp,
    "sctp-port": _sctp_number,
    "max-message-size": _sctp_number,
}
