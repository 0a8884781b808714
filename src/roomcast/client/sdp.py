"""Offers and answers written by a client peer (RFC 3264, JSEP RFC 8829). Pure functions.

A client offers sendonly audio/video sections (the publisher PeerConnection), shaped like
Chrome's: simulcast by `a=rid`/`a=simulcast` without SSRCs (RFC 8853), a single stream with
`a=ssrc` lines. It answers a server's offer (the subscriber PeerConnection) with recvonly
sections taking the offered codecs and extension ids as they are. Everything is BUNDLEd on one
transport with one ICE ufrag/pwd and one DTLS certificate (RFC 8843).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace

from roomcast.media.sdp import (
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
    SessionDescription,
    Simulcast,
    SimulcastRid,
    Ssrc,
)

RTP_PROTO = "UDP/TLS/RTP/SAVPF"  # JSEP §5.1.2
DATA_PROTOS = ("UDP/DTLS/SCTP", "TCP/DTLS/SCTP")  # RFC 8841 §4.1
NULL_CONNECTION = "IN IP4 0.0.0.0"  # JSEP §5.2.1
NULL_RTCP = "9 IN IP4 0.0.0.0"


@dataclass(slots=True)
class LocalIce:
    """Our transport parameters, written into every section."""

    ufrag: str
    pwd: str
    fingerprint: str  # "sha-256 AB:CD:…" (RFC 8122 §5)
    candidates: list[str]  # "candidate:…" lines without "a="


@dataclass(slots=True)
class LocalTrack:
    """One track a client sends: a sendonly section in the offer.

    `ssrcs` has one SSRC per simulcast layer, in the order of `rids` (low → high, like
    LiveKit's q/h/f); without `rids` there is a single SSRC, announced with `a=ssrc` lines."""

    kind: str  # "audio" | "video"
    track_id: str  # the msid track id; LiveKit matches it to AddTrackRequest.cid
    stream_id: str
    codecs: list[Codec]
    extmaps: list[Extmap] = field(default_factory=list)
    ssrcs: list[int] = field(default_factory=list)
    rids: list[str] = field(default_factory=list)
    mid: str = ""  # set by build_offer


@dataclass(slots=True)
class RemoteTrack:
    """One sending section of the remote's offer: what we receive on it."""

    mid: str
    kind: str
    stream_id: str | None  # msid stream id (LiveKit: "<PA_sid>|<TR_sid>")
    track_id: str | None  # msid track id (LiveKit: "<TR_sid>")
    ssrcs: list[int]
    codecs: list[Codec]
    extmaps: list[Extmap]


@dataclass(slots=True)
class RemoteTransport:
    """The remote's side of the one BUNDLEd transport."""

    ufrag: str
    pwd: str
    fingerprint: str  # "sha-256 AB:…"
    candidates: list[str]
    setup: str  # the remote's a=setup
    ice_lite: bool


def remote_transport(desc: SessionDescription) -> RemoteTransport:
    """ICE credentials, DTLS fingerprint and candidates from the first live section (BUNDLE
    means they are the same in each, RFC 8843 §7.1.3). Raises SdpError if any is missing."""
    section = next((m for m in desc.media if not m.rejected), None)
    if section is None:
        raise SdpError("no accepted media section")
    ufrag = section.ice_ufrag or desc.ice_ufrag
    pwd = section.ice_pwd or desc.ice_pwd
    if not ufrag or not pwd:
        raise SdpError("no a=ice-ufrag / a=ice-pwd (RFC 8839 §5.4)")
    fingerprints = desc.fingerprints_for(section)
    chosen = next((f for f in fingerprints if f.algorithm.lower() == "sha-256"), None)
    if chosen is None:
        raise SdpError("no sha-256 a=fingerprint (RFC 8122 §5)")
    candidates = [c for m in desc.media if not m.rejected for c in m.candidates]
    setup = section.setup or desc.setup or "active"  # RFC 4145 §4: absent means active
    return RemoteTransport(
        ufrag, pwd, f"{chosen.algorithm} {chosen.value}", candidates, setup, desc.ice_lite
    )


def build_offer(ice: LocalIce, tracks: list[LocalTrack], *, session_id: str, version: int) -> str:
    """A publisher offer: one sendonly section per track, mids "0", "1", … in order."""
    desc = _session(session_id, version)
    for index, track in enumerate(tracks):
        track.mid = str(index)
        desc.media.append(_send_section(ice, track))
    desc.groups.append(Group("BUNDLE", [t.mid for t in tracks]))
    return desc.serialize()


def build_answer(
    offer: SessionDescription,
    ice: LocalIce,
    *,
    session_id: str,
    version: int,
    accept_data: bool = True,
) -> tuple[str, list[RemoteTrack]]:
    """Answer an offer: receive every audio/video section the remote sends on, with all of its
    codecs and extension ids; accept the first data section (without running SCTP on it unless
    the caller does) or reject it. Returns the SDP and the tracks we will receive."""
    setup = _answer_setup(remote_transport(offer).setup)
    desc = _session(session_id, version)
    desc.extmap_allow_mixed = offer.extmap_allow_mixed
    tracks: list[RemoteTrack] = []
    have_data = False
    for offered in offer.media:
        if offered.mid is None:
            raise SdpError(f"{offered.kind} section without a=mid (RFC 8843 §7.2)")
        if offered.rejected:
            desc.media.append(_rejected(offered))
        elif offered.kind == "application":
            usable = accept_data and not have_data and offered.proto in DATA_PROTOS
            have_data = have_data or usable
            desc.media.append(_data_section(ice, offered, setup) if usable else _rejected(offered))
        elif offered.kind in ("audio", "video") and offered.proto.endswith("SAVPF"):
            section = _recv_section(ice, offered, setup)
            desc.media.append(section)
            if section.direction == "recvonly":
                tracks.append(_remote_track(offered))
        else:
            desc.media.append(_rejected(offered))
    live = [m.mid for m in desc.media if m.port != 0 and m.mid is not None]
    bundle = offer.bundle_group()
    if bundle is not None:  # RFC 8843 §7.3: accepted mids, in the offer's group order
        desc.groups.append(Group("BUNDLE", [mid for mid in bundle.mids if mid in live]))
    return desc.serialize(), tracks


def new_session_id() -> str:
    return str(secrets.randbits(62) + 1)  # RFC 8866 §5.2: top bit clear


# --- sections ------------------------------------------------------------------------------


def _session(session_id: str, version: int) -> SessionDescription:
    return SessionDescription(
        origin=Origin(session_id=session_id, session_version=version),
        msid_semantic=MsidSemantic("WMS", ["*"]),
    )


def _transport(section: MediaSection, ice: LocalIce, setup: str) -> MediaSection:
    algorithm, value = ice.fingerprint.split()
    section.connection = NULL_CONNECTION
    section.ice_ufrag, section.ice_pwd, section.setup = ice.ufrag, ice.pwd, setup
    section.fingerprints = [Fingerprint(algorithm, value)]
    section.candidates = list(ice.candidates)
    section.end_of_candidates = True  # RFC 8840 §8.2: one host candidate, nothing to trickle
    return section


def _send_section(ice: LocalIce, track: LocalTrack) -> MediaSection:
    fmts = [str(c.payload_type) for c in track.codecs]
    section = MediaSection(track.kind, 9, RTP_PROTO, fmts, mid=track.mid, rtcp=NULL_RTCP)
    _transport(section, ice, "actpass")  # JSEP §5.2.1: offers say actpass
    section.extmaps = [replace(e) for e in track.extmaps]
    section.direction = "sendonly"
    section.msids = [Msid(track.stream_id, track.track_id)]  # RFC 8830 §2
    section.rtcp_mux = section.rtcp_rsize = True
    section.codecs = [replace(c, rtcp_fb=list(c.rtcp_fb)) for c in track.codecs]
    if track.rids:  # RFC 8851 §4 / RFC 8853 §5.1, no SSRCs in the SDP (as Chrome)
        section.rids = [Rid(rid, "send") for rid in track.rids]
        section.simulcast = Simulcast(send=[[SimulcastRid(rid)] for rid in track.rids])
    else:
        msid = f"{track.stream_id} {track.track_id}"
        section.ssrcs = [
            Ssrc(ssrc, [Attribute("cname", track.stream_id), Attribute("msid", msid)])
            for ssrc in track.ssrcs[:1]
        ]
    return section


def _recv_section(ice: LocalIce, offered: MediaSection, setup: str) -> MediaSection:
    sending = (offered.direction or "sendrecv") in ("sendonly", "sendrecv")
    fmts = [str(c.payload_type) for c in offered.codecs] or offered.fmts[:1]
    section = MediaSection(offered.kind, 9, offered.proto, fmts, mid=offered.mid, rtcp=NULL_RTCP)
    _transport(section, ice, setup)
    # RFC 8285 §7: an extmap direction in the answer is the offer's seen from our side.
    reverse = {"sendonly": "recvonly", "recvonly": "sendonly"}
    section.extmaps = [
        replace(e, direction=reverse.get(e.direction or "", e.direction)) for e in offered.extmaps
    ]
    section.extmap_allow_mixed = offered.extmap_allow_mixed
    section.direction = "recvonly" if sending else "inactive"
    section.rtcp_mux, section.rtcp_rsize = True, offered.rtcp_rsize
    section.codecs = [replace(c, rtcp_fb=list(c.rtcp_fb)) for c in offered.codecs]
    return section


def _data_section(ice: LocalIce, offered: MediaSection, setup: str) -> MediaSection:
    section = MediaSection("application", 9, offered.proto, list(offered.fmts), mid=offered.mid)
    section.sctp_port = offered.sctp_port or 5000  # RFC 8841 §5
    section.max_message_size = offered.max_message_size
    return _transport(section, ice, setup)


def _rejected(offered: MediaSection) -> MediaSection:
    """RFC 3264 §6 / RFC 8843 §7.3.3: port 0, one format, the mid kept."""
    section = MediaSection(offered.kind, 0, offered.proto, offered.fmts[:1], mid=offered.mid)
    section.connection = NULL_CONNECTION
    if offered.kind != "application":
        section.direction = "inactive"
    return section


def _remote_track(offered: MediaSection) -> RemoteTrack:
    msid = offered.msid
    repairs = {g.ssrcs[1] for g in offered.ssrc_groups if g.semantics == "FID" and len(g.ssrcs) > 1}
    return RemoteTrack(
        mid=offered.mid or "",
        kind=offered.kind,
        stream_id=msid.stream_id if msid is not None else None,
        track_id=msid.track_id if msid is not None else None,
        ssrcs=[s.ssrc for s in offered.ssrcs if s.ssrc not in repairs],
        codecs=list(offered.codecs),
        extmaps=list(offered.extmaps),
    )


def _answer_setup(offered: str) -> str:
    """RFC 5763 §5: answer active (DTLS client) to actpass or passive, passive to active."""
    if offered in ("actpass", "passive"):
        return "active"
    if offered == "active":
        return "passive"
    raise SdpError(f"cannot answer a=setup:{offered} (RFC 4145 §4)")
