"""SDP (RFC 8866) parser and writer for WebRTC offers and answers. No I/O.

`SessionDescription.parse(text)` turns an SDP into dataclasses that keep everything WebRTC
negotiation needs — BUNDLE groups, mid, msid, rid, simulcast, extmap, rtpmap/fmtp/rtcp-fb, ssrc —
and `serialize()` writes it back. Attributes we do not model are kept, in order, as `Attribute`s,
so parse → serialize → parse gives an equal object (the text may differ in attribute order and
whitespace). Untrusted input only ever raises `SdpError`, whose message names the line.

This module is the import surface: the value dataclasses live in `sdp_fields`, the attribute
parsers in `sdp_attributes`; here are the description, its line structure and the writer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from roomcast.media.sdp_attributes import (
    NumberedAttribute,
    bounded_int,
    flag,
    parse_common_attribute,
    parse_media_attributes,
    parse_origin,
    split_attribute,
    tokens,
)
from roomcast.media.sdp_fields import (
    DIRECTIONS,
    SETUP_ROLES,
    Attribute,
    Codec,
    Extmap,
    Fingerprint,
    Group,
    MediaSection,
    Msid,
    MsidSemantic,
    Origin,
    Rid,
    SdpError,
    Simulcast,
    SimulcastRid,
    Ssrc,
    SsrcGroup,
)

__all__ = [
    "DIRECTIONS",
    "MAX_MEDIA_SECTIONS",
    "MAX_SDP_SIZE",
    "SETUP_ROLES",
    "Attribute",
    "Codec",
    "Extmap",
    "Fingerprint",
    "Group",
    "MediaSection",
    "Msid",
    "MsidSemantic",
    "Origin",
    "Rid",
    "SdpError",
    "SessionDescription",
    "Simulcast",
    "SimulcastRid",
    "Ssrc",
    "SsrcGroup",
]

MAX_SDP_SIZE = 256 * 1024  # far above any real offer (Chrome with 10 tracks: ~30 KiB)
# A LiveKit publisher has at most 32 tracks, plus data and the SDKs' spare sections; every
# section costs server state per participant, so a description may not hold more than this.
MAX_MEDIA_SECTIONS = 128

_LINE_TYPES = frozenset("vosiuepcbtrzkam")  # RFC 8866 §5; anything else must be rejected
_MEDIA_LINE_TYPES = frozenset("icbka")  # RFC 8866 §5: what may follow an m= line
_SESSION_TEXT = {"s": "name", "i": "info", "u": "uri", "c": "connection", "k": "key"}
_SESSION_LISTS = {"e": "emails", "p": "phones", "b": "bandwidths"}
_MEDIA_TEXT = {"i": "info", "c": "connection", "k": "key"}


@dataclass(slots=True)
class SessionDescription:
    """A whole SDP: session-level lines and attributes, then the media sections."""

    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    timing: list[tuple[str, str]] = field(default_factory=lambda: [("t", "0 0")])  # t=, r=, z=
    key: str | None = None
    groups: list[Group] = field(default_factory=list)
    extmap_allow_mixed: bool = False
    msid_semantic: MsidSemantic | None = None
    ice_lite: bool = False  # RFC 8839 §5.3
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: list[str] = field(default_factory=list)
    fingerprints: list[Fingerprint] = field(default_factory=list)
    setup: str | None = None
    direction: str | None = None
    extmaps: list[Extmap] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaSection] = field(default_factory=list)

    def bundle_group(self) -> Group | None:
        return next((g for g in self.groups if g.semantics == "BUNDLE"), None)

    def section(self, mid: str) -> MediaSection | None:
        return next((m for m in self.media if m.mid == mid), None)

    def fingerprints_for(self, section: MediaSection) -> list[Fingerprint]:
        """Media-level fingerprints, else the session-level ones (RFC 8122 §5)."""
        return section.fingerprints or self.fingerprints

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse an SDP; accepts CRLF or LF line ends. Raises SdpError, nothing else."""
        lines = _split_lines(text)
        if not lines or (lines[0][1], lines[0][2]) != ("v", "0"):
            raise SdpError("an SDP must start with v=0", lines[0][0] if lines else None)
        starts = [i for i, line in enumerate(lines) if line[1] == "m"] + [len(lines)]
        if len(starts) - 1 > MAX_MEDIA_SECTIONS:
            raise SdpError(f"more than {MAX_MEDIA_SECTIONS} media sections")
        desc = _parse_session(lines[: starts[0]], lines[starts[0] - 1][0] + 1)
        for begin, end in itertools.pairwise(starts):
            desc.media.append(_parse_media(lines[begin:end]))
        _check_mids(desc, lines)
        return desc

    def serialize(self) -> str:
        out = ["v=0", f"o={self.origin}", f"s={self.name}"]
        out += _optional("i", self.info) + _optional("u", self.uri)
        out += [f"e={e}" for e in self.emails] + [f"p={p}" for p in self.phones]
        out += _optional("c", self.connection) + [f"b={b}" for b in self.bandwidths]
        out += [f"{kind}={value}" for kind, value in self.timing] + _optional("k", self.key)
        out += [f"a=group:{' '.join([g.semantics, *g.mids])}" for g in self.groups]
        if self.extmap_allow_mixed:
            out.append("a=extmap-allow-mixed")
        if self.msid_semantic is not None:
            ms = self.msid_semantic
            out.append(f"a=msid-semantic: {' '.join([ms.semantic, *ms.ids])}")
        if self.ice_lite:
            out.append("a=ice-lite")
        out += _transport_lines(self)
        out += _optional("a=", self.direction, sep="")
        out += [_extmap_line(e) for e in self.extmaps]
        out += [f"a={a}" for a in self.attributes]
        for section in self.media:
            out += _media_lines(section)
        return "\r\n".join(out) + "\r\n"


# --- parsing -------------------------------------------------------------------------------------

_Line = tuple[int, str, str]  # (line number, type letter, value)


def _split_lines(text: str | bytes) -> list[_Line]:
    if len(text) > MAX_SDP_SIZE:
        raise SdpError(f"description is larger than {MAX_SDP_SIZE} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("description is not UTF-8 text") from None
    lines = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line or line.isspace():
            continue  # the empty string after the final CRLF; stray blank lines
        if "\r" in line or "\x00" in line:
            raise SdpError("stray CR or NUL character", number)
        if len(line) < 2 or line[1] != "=" or line[0] not in _LINE_TYPES:
            raise SdpError(f"expected <type>=<value> (RFC 8866 §5), got {line[:40]!r}", number)
        lines.append((number, line[0], line[2:]))
    return lines


def _parse_session(lines: list[_Line], end: int) -> SessionDescription:
    desc = SessionDescription(timing=[])
    seen = {"v"}
    for number, kind, value in lines[1:]:
        if kind in "vosiuck" and kind in seen:  # RFC 8866 §5: at most once
            raise SdpError(f"more than one {kind}= line in the session part", number)
        seen.add(kind)
        if kind == "o":
            desc.origin = parse_origin(value, number)
        elif kind in _SESSION_TEXT:
            setattr(desc, _SESSION_TEXT[kind], value)
        elif kind in _SESSION_LISTS:
            getattr(desc, _SESSION_LISTS[kind]).append(value)
        elif kind in "trz":
            desc.timing.append((kind, value))
        else:  # "a"
            _session_attribute(desc, number, *split_attribute(value, number))
    for kind, what in (("o", "o= (origin)"), ("s", "s= (session name)"), ("t", "t= (timing)")):
        if kind not in seen:
            raise SdpError(f"missing {what} line before the first m= line", end)
    return desc


def _session_attribute(desc: SessionDescription, number: int, name: str, value: str | None) -> None:
    if parse_common_attribute(desc, number, name, value):
        return
    if name == "group":
        parts = tokens(value, number, name, minimum=1)
        desc.groups.append(Group(parts[0], parts[1:]))
    elif name == "msid-semantic":
        parts = tokens(value, number, name, minimum=1)
        desc.msid_semantic = MsidSemantic(parts[0], parts[1:])
    elif name == "ice-lite":
        desc.ice_lite = flag(value, number, name)
    else:
        desc.attributes.append(Attribute(name, value))


def _parse_media(lines: list[_Line]) -> MediaSection:
    section = _parse_m_line(*lines[0])
    attributes: list[NumberedAttribute] = []
    for number, kind, text in lines[1:]:
        if kind not in _MEDIA_LINE_TYPES:
            raise SdpError(f"{kind}= is not allowed in a media section", number)
        if kind == "a":
            attributes.append((number, *split_attribute(text, number)))
        elif kind == "b":
            section.bandwidths.append(text)
        elif getattr(section, _MEDIA_TEXT[kind]) is not None:
            raise SdpError(f"more than one {kind}= line in this media section", number)
        else:
            setattr(section, _MEDIA_TEXT[kind], text)
    parse_media_attributes(section, attributes)
    return section


def _parse_m_line(number: int, kind: str, value: str) -> MediaSection:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError("m= needs <media> <port> <proto> <fmt>... (RFC 8866 §5.14)", number)
    media, port_text, proto, *fmts = parts
    port, slash, count = port_text.partition("/")
    section = MediaSection(media, bounded_int(port, number, "m= port", 0, 65535), proto, fmts)
    if slash:
        section.port_count = bounded_int(count, number, "m= number of ports", 1, 65535)
    if "RTP/" in proto:
        for fmt in fmts:
            bounded_int(fmt, number, "m= payload type", 0, 127)
    return section


def _check_mids(desc: SessionDescription, lines: list[_Line]) -> None:
    """mids are unique (RFC 5888 §4) and every grouped mid names an m-section (§5, RFC 8843)."""
    first_m = next((n for n, kind, _ in lines if kind == "m"), None)
    seen: set[str] = set()
    for number, kind, value in lines:
        name, _, mid = value.partition(":")
        if kind == "a" and name == "mid" and first_m is not None and number > first_m:
            if mid.strip() in seen:
                raise SdpError(f"a=mid {mid.strip()!r} is used by two media sections", number)
            seen.add(mid.strip())
    for group in desc.groups:
        missing = [mid for mid in group.mids if mid not in seen]
        if missing:
            number = next(n for n, k, v in lines if k == "a" and v.startswith("group:"))
            raise SdpError(
                f"a=group:{group.semantics} names mid {missing[0]!r} but no media section has it"
                " (truncated description?)",
                number,
            )


# --- writing -------------------------------------------------------------------------------------


def _optional(prefix: str, value: str | None, *, sep: str = "=") -> list[str]:
    return [] if value is None else [f"{prefix}{sep}{value}"]


def _extmap_line(extmap: Extmap) -> str:
    ident = f"{extmap.id}/{extmap.direction}" if extmap.direction else str(extmap.id)
    tail = f" {extmap.attributes}" if extmap.attributes is not None else ""
    return f"a=extmap:{ident} {extmap.uri}{tail}"


def _transport_lines(target: SessionDescription | MediaSection) -> list[str]:
    out = _optional("a=ice-ufrag", target.ice_ufrag, sep=":")
    out += _optional("a=ice-pwd", target.ice_pwd, sep=":")
    if target.ice_options:
        out.append(f"a=ice-options:{' '.join(target.ice_options)}")
    out += [f"a=fingerprint:{f.algorithm} {f.value}" for f in target.fingerprints]
    return out + _optional("a=setup", target.setup, sep=":")


def _media_lines(m: MediaSection) -> list[str]:
    port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
    out = [f"m={' '.join([m.kind, port, m.proto, *m.fmts])}"]
    out += _optional("i", m.info) + _optional("c", m.connection)
    out += [f"b={b}" for b in m.bandwidths] + _optional("k", m.key)
    out += _optional("a=rtcp", m.rtcp, sep=":") + _transport_lines(m)
    out += _optional("a=mid", m.mid, sep=":") + [_extmap_line(e) for e in m.extmaps]
    if m.extmap_allow_mixed:
        out.append("a=extmap-allow-mixed")
    out += _optional("a=", m.direction, sep="")
    out += [f"a=msid:{' '.join(filter(None, (s.stream_id, s.track_id)))}" for s in m.msids]
    out += ["a=rtcp-mux"] if m.rtcp_mux else []
    out += ["a=rtcp-rsize"] if m.rtcp_rsize else []
    for c in m.codecs:
        channels = f"/{c.channels}" if c.channels is not None else ""
        out.append(f"a=rtpmap:{c.payload_type} {c.name}/{c.clock_rate}{channels}")
        out += [f"a=rtcp-fb:{c.payload_type} {fb}" for fb in c.rtcp_fb]
        if c.fmtp is not None:
            out.append(
                f"a=fmtp:{c.payload_type} {c.fmtp}" if c.fmtp else f"a=fmtp:{c.payload_type}"
            )
    out += [f"a=ssrc-group:{' '.join([g.semantics, *map(str, g.ssrcs)])}" for g in m.ssrc_groups]
    out += [f"a=ssrc:{s.ssrc} {a}" for s in m.ssrcs for a in s.attributes]
    out += [f"a=rid:{r.id} {r.direction}" + (f" {r.params}" if r.params else "") for r in m.rids]
    if m.simulcast is not None:
        out.append(f"a=simulcast:{m.simulcast}")
    out += _optional("a=sctp-port", None if m.sctp_port is None else str(m.sctp_port), sep=":")
    if m.max_message_size is not None:
        out.append(f"a=max-message-size:{m.max_message_size}")
    out += [f"a={a}" for a in m.attributes] + [f"a={c}" for c in m.candidates]
    return out + (["a=end-of-candidates"] if m.end_of_candidates else [])
