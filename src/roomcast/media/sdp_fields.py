"""The values of the SDP lines and attributes WebRTC negotiates, one dataclass each, and the m=
section (`MediaSection`) that holds them (RFC 8866). No parsing or I/O: `sdp_attributes` parses
attribute values into these, `sdp` reads and writes whole descriptions. Import them from
`roomcast.media.sdp`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # RFC 8866 §6.7
SETUP_ROLES = ("actpass", "active", "passive", "holdconn")  # RFC 4145 §4, RFC 5763 §5

# int() alone would also take "+1", " 1", "1_0" and non-ASCII digits.
_DIGITS = re.compile(r"[0-9]{1,20}")


def parse_uint(text: str) -> int | None:
    """A plain ASCII decimal number of at most 20 digits, else None."""
    return int(text) if _DIGITS.fullmatch(text) else None


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
        return parse_uint(apt)


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
                return [pt for pt in map(parse_uint, value.split(",")) if pt is not None]
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
        """The first a=msid, else the first a=ssrc msid: (what LiveKit reads,
        docs/protocol/03-publishing.md §3.2)."""
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
