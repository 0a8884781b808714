"""The receive sections of a single PeerConnection (`/rtc/v1`): which of the client's sections
carries which subscribed track, and when to ask the client for more. No I/O.

On `/rtc/v1` one PeerConnection carries both directions and only the client offers
(docs/protocol/19-signalling-v1.md §3). Besides its own sending sections it offers `recvonly`
audio and video sections, three of each up front: places for what it will receive. The server
answers such a section `sendonly`, with a subscribed track's a=msid and a=ssrc, or `inactive`
while it carries nothing. The server never offers; when it needs sections the client has not
offered, or another offer so that an answer can carry a change, it sends
`MediaSectionsRequirement{num_audios, num_videos}` and the client adds that many `recvonly`
sections (zero: none) and offers again.

`ReceiveSlots` keeps the client's receive sections ("slots") by mid, the subscribed tracks still
waiting for one, and what has been asked of the client. Its rules:

- a track goes onto a free slot of its kind only while an offer is answered: the answer is the
  only way the client learns of it;
- a slot freed by an unsubscription *drains* until an answer has told the client it is
  inactive, so a new track never takes over a section whose old track the client still shows;
- a slot the client no longer offers `recvonly` (rejected, or it sends on it now) gives its
  track back to the waiting ones;
- sections are asked for once per shortfall (`request`): the counts asked for are subtracted
  from the next shortfall until the client's new sections arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from roomcast.media.publisher_answer import MediaAnswerPlan
from roomcast.media.sdp import (
    Attribute,
    Codec,
    MediaSection,
    Msid,
    SessionDescription,
    Ssrc,
    SsrcGroup,
)

KINDS = ("audio", "video")


@dataclass(slots=True)
class Slot:
    """One `recvonly` section of the client's offers."""

    mid: str
    kind: str  # "audio" | "video"
    track: str | None = None  # the track sid answered (or to be answered) on it
    draining: bool = False  # freed; free again once an answer said so

    @property
    def free(self) -> bool:
        return self.track is None and not self.draining


@dataclass(frozen=True, slots=True)
class OfferedSection:
    """What `ReceiveSlots` needs of one audio/video section of a client offer."""

    mid: str
    kind: str
    receiving: bool  # offered recvonly (the client receives here and does not send)


def offered_sections(offer: SessionDescription) -> list[OfferedSection]:
    """The audio/video sections of an offer, as `ReceiveSlots.offered` takes them: receiving
    when recvonly, live and bundled (everything goes over the one transport, RFC 8843)."""
    bundle = offer.bundle_group()
    return [
        OfferedSection(
            section.mid,
            section.kind,
            not section.rejected
            and (section.direction or "sendrecv") == "recvonly"
            and (bundle is None or section.mid in bundle.mids),
        )
        for section in offer.media
        if section.mid is not None and section.kind in KINDS
    ]


@dataclass
class ReceiveSlots:
    slots: dict[str, Slot] = field(default_factory=dict)  # by mid, in the order offered
    _waiting: dict[str, str] = field(default_factory=dict)  # track sid → kind, oldest first
    _requested: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    _asked: bool = False  # a request went out and no offer has come since

    # -- subscriptions -----------------------------------------------------------------------
    def add(self, track_sid: str, kind: str) -> None:
        """A subscribed track: it waits for a slot (the next offer's answer carries it)."""
        if kind not in KINDS:
            raise ValueError(f"not a media kind: {kind!r}")
        if track_sid not in self._waiting and self.slot_of(track_sid) is None:
            self._waiting[track_sid] = kind

    def remove(self, track_sid: str) -> Slot | None:
        """An ended subscription; the slot it was on (now draining), if any."""
        self._waiting.pop(track_sid, None)
        slot = self.slot_of(track_sid)
        if slot is not None:
            slot.track = None
            slot.draining = True
        return slot

    def unassign(self, track_sid: str) -> None:
        """Forget a track this offer's answer cannot carry (no codec in common): its slot is
        answered inactive, so it is free at once."""
        self._waiting.pop(track_sid, None)
        slot = self.slot_of(track_sid)
        if slot is not None:
            slot.track = None

    def slot_of(self, track_sid: str) -> Slot | None:
        return next((s for s in self.slots.values() if s.track == track_sid), None)

    def waiting(self) -> list[str]:
        return list(self._waiting)

    def tracks_by_mid(self) -> dict[str, str]:
        """mid → track sid of every slot with a track (`SessionDescription.mid_to_track_id`)."""
        return {s.mid: s.track for s in self.slots.values() if s.track is not None}

    # -- negotiation -------------------------------------------------------------------------
    def offered(self, sections: list[OfferedSection]) -> list[str]:
        """A client offer arrived: take its receive sections, then put waiting tracks on free
        slots, oldest first. Returns the tracks that lost their slot (they wait again)."""
        self._asked = False
        receiving = {s.mid: s for s in sections if s.receiving}
        displaced: dict[str, str] = {}
        for mid in list(self.slots):
            offered = receiving.get(mid)
            if offered is None or offered.kind != self.slots[mid].kind:
                slot = self.slots.pop(mid)
                if slot.track is not None:
                    displaced[slot.track] = slot.kind
        self._waiting = {**displaced, **self._waiting}  # they were subscribed first
        for section in receiving.values():
            if section.mid not in self.slots:
                self.slots[section.mid] = Slot(section.mid, section.kind)
                self._requested[section.kind] = max(0, self._requested[section.kind] - 1)
        for track_sid, kind in list(self._waiting.items()):
            free = next((s for s in self.slots.values() if s.kind == kind and s.free), None)
            if free is not None:
                free.track = track_sid
                del self._waiting[track_sid]
        return list(displaced)

    def answered(self) -> None:
        """The answer to the last offer went out: drained slots are free now."""
        for slot in self.slots.values():
            slot.draining = False

    def request(self) -> tuple[int, int] | None:
        """The `MediaSectionsRequirement` (audio, video) to send now, or None.

        Sections for the waiting tracks beyond the free slots and those already asked for;
        else (0, 0), another offer, when an answer must carry a change (a waiting track fits
        a free slot, a slot drains) and none has been asked for since the last offer."""
        free = {k: sum(1 for s in self.slots.values() if s.kind == k and s.free) for k in KINDS}
        shortfall = dict.fromkeys(KINDS, 0)
        fits = 0
        for kind in self._waiting.values():
            if free[kind] > 0:
                free[kind] -= 1
                fits += 1
            else:
                shortfall[kind] += 1
        for kind in KINDS:
            shortfall[kind] = max(0, shortfall[kind] - self._requested[kind])
            self._requested[kind] += shortfall[kind]
        draining = any(s.draining for s in self.slots.values())
        if any(shortfall.values()) or ((fits or draining) and not self._asked):
            self._asked = True
            return shortfall["audio"], shortfall["video"]
        return None


# -- what a slot's answer says ---------------------------------------------------------------
# fmtp parameters that must agree for a payload type to carry a publisher's stream as is.
_SAME_STREAM = {"h264": ("packetization-mode",), "vp9": ("profile-id",), "av1": ("profile",)}
_DEFAULTS = {"packetization-mode": "0", "profile-id": "0", "profile": "0"}


def matching_codec(offered: MediaSection, codec: Codec) -> Codec | None:
    """The payload type of `offered` that carries `codec`'s stream: the same encoding name,
    clock rate and stream-shaping fmtp parameters; for H.264 the closest profile offered (the
    client's preference order breaks ties)."""
    name = codec.name.lower()
    wanted = codec.parameters()
    candidates = [
        c
        for c in offered.codecs
        if c.name.lower() == name
        and c.clock_rate == codec.clock_rate
        and all(
            c.parameters().get(key, _DEFAULTS[key]) == wanted.get(key, _DEFAULTS[key])
            for key in _SAME_STREAM.get(name, ())
        )
    ]
    if name == "h264":
        # profile_idc and profile-iop (RFC 6184 §8.1), else profile_idc alone, else any
        profile = wanted.get("profile-level-id", "").lower()
        for length in (4, 2):
            same = [
                c
                for c in candidates
                if c.parameters().get("profile-level-id", "").lower()[:length] == profile[:length]
            ]
            if same:
                candidates = same
                break
    return candidates[0] if candidates else None


def send_plan(
    offered: MediaSection,
    codecs: list[Codec],
    *,
    msid: Msid,
    ssrc: int,
    cname: str,
    feedback: tuple[str, ...],
    extensions: tuple[str, ...],
    rtx_ssrc: int = 0,
) -> MediaAnswerPlan | None:
    """Answer a receive section `sendonly` with a track sent in `codecs` (the publisher's,
    RED first when it sends RED): the offer's payload types for them with its own fmtp (a
    payload type must mean the same in every bundled section), rtcp-fb among `feedback`, the
    offered header extensions among `extensions`, one SSRC with cname and msid (RFC 5576 §4.1).
    None when the section offers none of the track's codecs. A RED track offered no RED is
    answered with its inner codec, but the plane forwards RED packets only where RED was
    negotiated (media/downtrack.py `pt_map`): such a subscriber gets no audio, as on `/rtc`
    when its answer leaves RED out. With `rtx_ssrc`, each chosen codec's RTX payload type
    the offer pairs with it (apt) is answered too, sent with that SSRC (RFC 4588 §8.6: FID)."""
    chosen: list[Codec] = []
    for codec in codecs:
        match = matching_codec(offered, codec)
        if match is not None and match not in chosen:
            chosen.append(replace(match, rtcp_fb=[fb for fb in match.rtcp_fb if fb in feedback]))
    primary = [c for c in chosen if c.name.lower() != "red"]
    if not primary:
        return None
    attributes = [Attribute("cname", cname), Attribute("msid", f"{msid.stream_id} {msid.track_id}")]
    ssrcs, groups = [Ssrc(ssrc, attributes)], []
    repairs = rtx_for(offered, primary) if rtx_ssrc else []
    if repairs:
        chosen += repairs
        ssrcs.append(Ssrc(rtx_ssrc, list(attributes)))
        groups.append(SsrcGroup("FID", [ssrc, rtx_ssrc]))
    return MediaAnswerPlan(
        codecs=chosen,
        extmaps=[replace(e) for e in offered.extmaps if e.uri in extensions],
        direction="sendonly",
        simulcast=False,
        msid=msid,
        ssrcs=ssrcs,
        ssrc_groups=groups,
    )


def rtx_for(offered: MediaSection, codecs: list[Codec]) -> list[Codec]:
    """The offer's RTX payload types repairing one of `codecs` (a=fmtp apt=, RFC 4588 §8.6)."""
    repaired = {c.payload_type for c in codecs}
    return [
        c
        for c in offered.codecs
        if c.name.lower() == "rtx" and c.associated_payload_type in repaired
    ]


def idle_plan(offered: MediaSection, extensions: tuple[str, ...]) -> MediaAnswerPlan | None:
    """Answer a receive section that carries nothing: inactive, its first real codec, and the
    offered header extensions among `extensions`. Answered without them, libwebrtc leaves
    those extensions out of the client's next offers, for the sections it will publish on too."""
    real = [
        c for c in offered.codecs if c.name.lower() not in ("rtx", "red", "ulpfec", "flexfec-03")
    ]
    if not real:
        return None
    return MediaAnswerPlan(
        codecs=[replace(real[0], rtcp_fb=[])],
        extmaps=[replace(e) for e in offered.extmaps if e.uri in extensions],
        direction="inactive",
        simulcast=False,
    )
