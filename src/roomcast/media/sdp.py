"""SDP (RFC 8866) parser and writer for WebRTC offers and answers. No I/O.

`SessionDescription.parse(text)` turns an SDP into dataclasses that keep everything WebRTC
negotiation needs — BUNDLE groups, mid, msid, rid, simulcast, extmap, rtpmap/fmtp/rtcp-fb, ssrc —
and `serialize()` writes it back. Attributes we do not model are kept, in order, as `Attribute`s,
so parse → serialize → parse gives an equal object (the text may differ in attribute order and
whitespace). Untrusted input only ever raises `SdpError`, whose message names the line.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

MAX_SDP_SIZE = 256 * 1024  # far above any real offer (Chrome with 10 tracks: ~30 KiB)

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # RFC 8866 §6.7
SETUP_ROLES = ("actpass", "active", "passive", "holdconn")  # RFC 4145 §4, RFC 5763 §5

# RFC 8866 §9: token = 1*(token-char); used for mids (RFC 5888 §4) and msid ids (RFC 8830 §2).
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_RID_ID = re.compile(r"[A-Za-z0-9_-]+")  # RFC 8851 §10: rid-id = 1*(alpha-numeric / "-" / "_")
_DIGITS = re.compile(
    r"[0-9]{1,20}"
)  # int() alone would also take "+1", " 1", "1_0", non-ASCII digits
_LINE_TYPES = frozenset("vosiuepcbtrzkam")  # RFC 8866 §5; anything else must be rejected
_MEDIA_LINE_TYPES = frozenset("icbka")  # RFC 8866 §5: what may follow an m= line


class SdpError(ValueError):
    """An SDP we cannot parse or answer. The message names the line number and the problem."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"SDP line {line}: {message}" if line is not None else f"SDP: {message}")
        self.line = line


@dataclass(slots=True)
class Origin:
    """o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address> (RFC 8866 §5.2)."""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Attribute:
    """An attribute we do not model: a=<name> or a=<name>:<value> (RFC 8866 §5.13)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(slots=True)
class Group:
    """a=group:<semantics> <mid>... (RFC 5888 §5); semantics "BUNDLE" is RFC 8843."""

    semantics: str
    mids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class MsidSemantic:
    """a=msid-semantic: WMS [<stream id>... | *] (draft-ietf-mmusic-msid-05, kept by libwebrtc)."""

    semantic: str = "WMS"
    ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Fingerprint:
    """a=fingerprint:<hash-func> <hex pairs> (RFC 8122 §5)."""

    algorithm: str
    value: str


@dataclass(slots=True)
class Extmap:
    """a=extmap:<id>[/<direction>] <uri> [<attributes>] (RFC 8285 §8)."""

    id: int
    uri: str
    direction: str | None = None
    attributes: str | None = None


@dataclass(slots=True)
class Codec:
    """One payload type: a=rtpmap (RFC 8866 §6.6), a=fmtp (§6.15), a=rtcp-fb (RFC 4585 §4.2)."""

    payload_type: int
    name: str  # encoding name as written ("opus", "VP8", "rtx"); compare case-insensitively
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None
    rtcp_fb: list[str] = field(default_factory=list)  # e.g. ["nack", "nack pli", "ccm fir"]

    def parameters(self) -> dict[str, str]:
        """fmtp "a=b;c=d" as a dict with lower-cased keys (RFC 8866 §6.15 leaves the format to
        the codec; every WebRTC codec uses key=value pairs separated by ';')."""
        params: dict[str, str] = {}
        for item in (self.fmtp or "").split(";"):
            key, _, value = item.strip().partition("=")
            if key:
                params[key.lower()] = value
        return params

    @property
    def associated_payload_type(self) -> int | None:
        """apt= of an rtx codec (RFC 4588 §8.6), else None."""
        apt = self.parameters().get("apt", "")
        return int(apt) if _DIGITS.fullmatch(apt) else None


@dataclass(slots=True)
class Msid:
    """a=msid:<stream id> [<track id>] (RFC 8830 §2)."""

    stream_id: str
    track_id: str | None = None


@dataclass(slots=True)
class Ssrc:
    """All a=ssrc:<ssrc> <attribute>[:<value>] lines of one SSRC, in order (RFC 5576 §4.1)."""

    ssrc: int
    attributes: list[Attribute] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        return next((a.value for a in self.attributes if a.name == name), None)


@dataclass(slots=True)
class SsrcGroup:
    """a=ssrc-group:<semantics> <ssrc>... (RFC 5576 §4.2); FID = RTX, SIM = simulcast."""

    semantics: str
    ssrcs: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Rid:
    """a=rid:<id> send|recv [<restrictions>] (RFC 8851 §10)."""

    id: str
    direction: str
    params: str = ""  # raw "pt=96,97;max-width=1280"

    def payload_types(self) -> list[int] | None:
        """The pt= restriction (RFC 8851 §5), or None when the rid allows every PT."""
        for item in self.params.split(";"):
            key, _, value = item.strip().partition("=")
            if key == "pt":
                return [int(pt) for pt in value.split(",") if _DIGITS.fullmatch(pt)]
        return None


@dataclass(slots=True)
class SimulcastRid:
    id: str
    paused: bool = False  # "~" prefix (RFC 8853 §5.1)

    def __str__(self) -> str:
        return f"~{self.id}" if self.paused else self.id


@dataclass(slots=True)
class Simulcast:
    """a=simulcast:[send <streams>] [recv <streams>] (RFC 8853 §5.1). Streams are ';'-separated,
    each a ','-separated list of alternative rids."""

    send: list[list[SimulcastRid]] = field(default_factory=list)
    recv: list[list[SimulcastRid]] = field(default_factory=list)

    def rids(self, direction: str) -> list[str]:
        """Every rid id of one direction ("send" or "recv"), alternatives flattened, in order."""
        streams = self.send if direction == "send" else self.recv
        return [rid.id for alternatives in streams for rid in alternatives]

    def __str__(self) -> str:
        parts = []
        for direction, streams in (("send", self.send), ("recv", self.recv)):
            if streams:
                text = ";".join(",".join(str(rid) for rid in alts) for alts in streams)
                parts.append(f"{direction} {text}")
        return " ".join(parts)


@dataclass(slots=True)
class MediaSection:
    """One m= section and its attributes (RFC 8866 §5.14)."""

    kind: str  # "audio" | "video" | "application" | ...
    port: int
    proto: str
    fmts: list[str]
    port_count: int | None = None
    info: str | None = None
    connection: str | None = None  # c= value, e.g. "IN IP4 0.0.0.0"
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None
    rtcp: str | None = None  # a=rtcp value (RFC 3605), e.g. "9 IN IP4 0.0.0.0"
    ice_ufrag: str | None = None  # RFC 8839 §5.4
    ice_pwd: str | None = None
    ice_options: list[str] = field(default_factory=list)  # RFC 8839 §5.6
    fingerprints: list[Fingerprint] = field(default_factory=list)
    setup: str | None = None
    mid: str | None = None  # RFC 5888 §4
    extmaps: list[Extmap] = field(default_factory=list)
    extmap_allow_mixed: bool = False  # RFC 8285 §6
    direction: str | None = None  # None: not written (sendrecv, or the session-level value)
    msids: list[Msid] = field(default_factory=list)
    rtcp_mux: bool = False  # RFC 5761 §5.1.1
    rtcp_rsize: bool = False  # RFC 5506 §5
    codecs: list[Codec] = field(default_factory=list)  # in m= line order
    ssrc_groups: list[SsrcGroup] = field(default_factory=list)
    ssrcs: list[Ssrc] = field(default_factory=list)
    rids: list[Rid] = field(default_factory=list)
    simulcast: Simulcast | None = None
    sctp_port: int | None = None  # RFC 8841 §5
    max_message_size: int | None = None  # RFC 8841 §6
    attributes: list[Attribute] = field(default_factory=list)  # unknown ones, in order
    candidates: list[str] = field(default_factory=list)  # "candidate:..." (no "a="), RFC 8839
    end_of_candidates: bool = False  # RFC 8840 §8.2

    def codec(self, payload_type: int) -> Codec | None:
        return next((c for c in self.codecs if c.payload_type == payload_type), None)

    def has_attribute(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    @property
    def msid(self) -> Msid | None:
        """The first a=msid, else the first a=ssrc msid: (what LiveKit reads, ref 03 §3.2)."""
        if self.msids:
            return self.msids[0]
        for ssrc in self.ssrcs:
            value = ssrc.get("msid")
            if value and value.split():
                stream, *track = value.split()
                return Msid(stream, track[0] if track else None)
        return None

    @property
    def rejected(self) -> bool:
        """Port 0 without a=bundle-only (RFC 8866 §5.14, RFC 8843 §6)."""
        return self.port == 0 and not self.has_attribute("bundle-only")


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
            desc.origin = _parse_origin(value, number)
        elif kind == "s":
            desc.name = value
        elif kind == "i":
            desc.info = value
        elif kind == "u":
            desc.uri = value
        elif kind == "e":
            desc.emails.append(value)
        elif kind == "p":
            desc.phones.append(value)
        elif kind == "c":
            desc.connection = value
        elif kind == "b":
            desc.bandwidths.append(value)
        elif kind in "trz":
            desc.timing.append((kind, value))
        elif kind == "k":
            desc.key = value
        else:  # "a"
            _session_attribute(desc, number, *_split_attribute(value, number))
    for kind, what in (("o", "o= (origin)"), ("s", "s= (session name)"), ("t", "t= (timing)")):
        if kind not in seen:
            raise SdpError(f"missing {what} line before the first m= line", end)
    return desc


def _parse_origin(value: str, number: int) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(
            "o= needs 6 fields: username sess-id sess-version nettype addrtype addr", number
        )
    version = _int(parts[2], number, "o= sess-version")
    return Origin(parts[0], parts[1], version, parts[3], parts[4], parts[5])


def _split_attribute(value: str, number: int) -> tuple[str, str | None]:
    name, sep, rest = value.partition(":")
    if not name.strip():
        raise SdpError(f"attribute without a name: {value[:40]!r}", number)
    return name, (rest if sep else None)


def _session_attribute(desc: SessionDescription, number: int, name: str, value: str | None) -> None:
    if _common_attribute(desc, number, name, value):
        return
    if name == "group":
        parts = _tokens(value, number, name, minimum=1)
        desc.groups.append(Group(parts[0], parts[1:]))
    elif name == "msid-semantic":
        parts = _tokens(value, number, name, minimum=1)
        desc.msid_semantic = MsidSemantic(parts[0], parts[1:])
    elif name == "ice-lite":
        desc.ice_lite = _flag(value, number, name)
    else:
        desc.attributes.append(Attribute(name, value))


def _common_attribute(
    target: SessionDescription | MediaSection, number: int, name: str, value: str | None
) -> bool:
    """Attributes allowed at both levels. Returns False for any other name."""
    if name in ("ice-ufrag", "ice-pwd"):
        (token,) = _tokens(value, number, name, exactly=1)
        if getattr(target, name.replace("-", "_")) is not None:
            raise SdpError(f"more than one a={name}", number)
        setattr(target, name.replace("-", "_"), token)
    elif name == "ice-options":
        target.ice_options += _tokens(value, number, name)
    elif name == "fingerprint":
        algorithm, fingerprint = _tokens(value, number, name, exactly=2)
        target.fingerprints.append(Fingerprint(algorithm, fingerprint))
    elif name == "setup":
        (role,) = _tokens(value, number, name, exactly=1)
        if role not in SETUP_ROLES:
            raise SdpError(f"a=setup must be one of {', '.join(SETUP_ROLES)}", number)
        target.setup = role
    elif name in DIRECTIONS:
        if target.direction is not None:
            raise SdpError(f"a={name} conflicts with a={target.direction}", number)
        target.direction = name if _flag(value, number, name) else None
    elif name == "extmap-allow-mixed":
        target.extmap_allow_mixed = _flag(value, number, name)
    elif name == "extmap":
        extmap = _parse_extmap(value, number)
        if any(e.id == extmap.id for e in target.extmaps):
            raise SdpError(f"a=extmap id {extmap.id} is used twice (RFC 8285 §5)", number)
        target.extmaps.append(extmap)
    else:
        return False
    return True


def _parse_extmap(value: str | None, number: int) -> Extmap:
    parts = _tokens(value, number, "extmap", minimum=2)
    id_text, _, direction = parts[0].partition("/")
    extmap_id = _int(id_text, number, "a=extmap id", 1, 255)
    if direction and direction not in DIRECTIONS:
        raise SdpError(f"a=extmap direction {direction!r} is not one of {DIRECTIONS}", number)
    rest = (value or "").split(None, 2)
    return Extmap(extmap_id, parts[1], direction or None, rest[2] if len(rest) > 2 else None)


def _parse_media(lines: list[_Line]) -> MediaSection:
    number, _, value = lines[0]
    parts = value.split()
    if len(parts) < 4:
        raise SdpError("m= needs <media> <port> <proto> <fmt>... (RFC 8866 §5.14)", number)
    kind, port_text, proto, *fmts = parts
    port, slash, count = port_text.partition("/")
    section = MediaSection(kind, _int(port, number, "m= port", 0, 65535), proto, fmts)
    if slash:
        section.port_count = _int(count, number, "m= number of ports", 1, 65535)
    is_rtp = "RTP/" in proto
    if is_rtp:
        for fmt in fmts:
            _int(fmt, number, "m= payload type", 0, 127)
    attributes: list[tuple[int, str, str | None]] = []
    for line_number, line_kind, text in lines[1:]:
        if line_kind not in _MEDIA_LINE_TYPES:
            raise SdpError(f"{line_kind}= is not allowed in a media section", line_number)
        if line_kind == "a":
            attributes.append((line_number, *_split_attribute(text, line_number)))
        elif line_kind == "b":
            section.bandwidths.append(text)
        else:
            field_name = {"i": "info", "c": "connection", "k": "key"}[line_kind]
            if getattr(section, field_name) is not None:
                raise SdpError(
                    f"more than one {line_kind}= line in this media section", line_number
                )
            setattr(section, field_name, text)
    # Two passes: a=fmtp and a=rtcp-fb may come before the a=rtpmap they refer to.
    codecs: dict[int, Codec] = {}
    for line_number, name, attr_value in attributes:
        if name == "rtpmap":
            codec = _parse_rtpmap(attr_value, line_number)
            if codec.payload_type in codecs:
                raise SdpError(f"a=rtpmap for payload type {codec.payload_type} twice", line_number)
            codecs[codec.payload_type] = codec
    for line_number, name, attr_value in attributes:
        if name != "rtpmap":
            _media_attribute(section, codecs, line_number, name, attr_value)
    order = {fmt: i for i, fmt in enumerate(fmts)}
    section.codecs = sorted(codecs.values(), key=lambda c: order.get(str(c.payload_type), 999))
    return section


def _parse_rtpmap(value: str | None, number: int) -> Codec:
    # RFC 8866 §6.6: a=rtpmap:<payload type> <encoding name>/<clock rate>[/<parameters>]
    pt_text, encoding = _tokens(value, number, "rtpmap", exactly=2)
    pieces = encoding.split("/")
    if len(pieces) not in (2, 3) or not pieces[0]:
        raise SdpError("a=rtpmap needs <encoding>/<clock rate>[/<channels>]", number)
    channels = _int(pieces[2], number, "a=rtpmap channels", 1, 255) if len(pieces) == 3 else None
    return Codec(
        payload_type=_int(pt_text, number, "a=rtpmap payload type", 0, 127),
        name=pieces[0],
        clock_rate=_int(pieces[1], number, "a=rtpmap clock rate", 1, 2**32),
        channels=channels,
    )


def _media_attribute(
    section: MediaSection, codecs: dict[int, Codec], number: int, name: str, value: str | None
) -> None:
    if _common_attribute(section, number, name, value):
        return
    if name in ("fmtp", "rtcp-fb") and value is not None:
        pt_text, _, rest = value.lstrip().partition(" ")
        codec = codecs.get(int(pt_text)) if _DIGITS.fullmatch(pt_text) else None
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
    elif name == "mid":
        (mid,) = _tokens(value, number, name, exactly=1)
        if section.mid is not None:
            raise SdpError("more than one a=mid in this media section", number)
        if not _TOKEN.fullmatch(mid):
            raise SdpError(f"a=mid {mid!r} is not a token (RFC 5888 §4)", number)
        section.mid = mid
    elif name == "candidate":
        if not value or not value.strip():
            raise SdpError("a=candidate is empty", number)
        section.candidates.append(f"candidate:{value}")
    elif name == "msid":
        ids = _tokens(value, number, name, minimum=1)
        if len(ids) > 2:
            raise SdpError("a=msid is <stream id> [<track id>] (RFC 8830 §2)", number)
        section.msids.append(Msid(ids[0], ids[1] if len(ids) == 2 else None))
    elif name == "ssrc":
        _parse_ssrc(section, value, number)
    elif name == "ssrc-group":
        semantics, *ssrcs = _tokens(value, number, name, minimum=2)
        group = [_int(s, number, "a=ssrc-group SSRC", 0, 2**32 - 1) for s in ssrcs]
        section.ssrc_groups.append(SsrcGroup(semantics, group))
    elif name == "rid":
        _parse_rid(section, value, number)
    elif name == "simulcast":
        if section.simulcast is not None:
            raise SdpError("more than one a=simulcast in this media section", number)
        section.simulcast = _parse_simulcast(value, number)
    elif name in ("rtcp-mux", "rtcp-rsize", "end-of-candidates"):
        setattr(section, name.replace("-", "_"), _flag(value, number, name))
    elif name in ("rtcp", "sctp-port", "max-message-size"):
        attr = name.replace("-", "_")
        if getattr(section, attr) is not None:
            raise SdpError(f"more than one a={name} in this media section", number)
        if name == "rtcp":
            _tokens(value, number, name, minimum=1)
            setattr(section, attr, value)
        else:
            (text,) = _tokens(value, number, name, exactly=1)
            limit = 65535 if name == "sctp-port" else 2**64
            setattr(section, attr, _int(text, number, f"a={name}", 0, limit))
    else:
        section.attributes.append(Attribute(name, value))


def _parse_ssrc(section: MediaSection, value: str | None, number: int) -> None:
    # RFC 5576 §4.1: a=ssrc:<ssrc-id> <attribute>[:<value>]
    parts = (value or "").split(None, 1)
    if len(parts) != 2 or not parts[1].strip():
        raise SdpError("a=ssrc needs <ssrc> <attribute>[:<value>] (RFC 5576 §4.1)", number)
    ssrc_id = _int(parts[0], number, "a=ssrc SSRC", 0, 2**32 - 1)
    attr_name, attr_value = _split_attribute(parts[1], number)
    ssrc = next((s for s in section.ssrcs if s.ssrc == ssrc_id), None)
    if ssrc is None:
        ssrc = Ssrc(ssrc_id)
        section.ssrcs.append(ssrc)
    ssrc.attributes.append(Attribute(attr_name, attr_value))


def _parse_rid(section: MediaSection, value: str | None, number: int) -> None:
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


def _parse_simulcast(value: str | None, number: int) -> Simulcast:
    # RFC 8853 §5.1: sc-value = ( sc-send [SP sc-recv] ) / ( sc-recv [SP sc-send] )
    parts = _tokens(value, number, "simulcast", minimum=2)
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


def _tokens(
    value: str | None, number: int, name: str, *, exactly: int = 0, minimum: int = 0
) -> list[str]:
    parts = (value or "").split()
    if exactly and len(parts) != exactly:
        raise SdpError(f"a={name} needs {exactly} value(s), got {len(parts)}", number)
    if len(parts) < minimum:
        raise SdpError(f"a={name} needs at least {minimum} value(s)", number)
    return parts


def _flag(value: str | None, number: int, name: str) -> bool:
    if value is not None:
        raise SdpError(f"a={name} takes no value", number)
    return True


def _int(text: str, number: int, what: str, low: int = 0, high: int = 2**64) -> int:
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise SdpError(f"{what} must be a number from {low} to {high}, got {text[:20]!r}", number)
    return int(text)


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
