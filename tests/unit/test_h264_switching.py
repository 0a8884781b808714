"""H.264 simulcast: a subscriber switches layers only where the new layer's SPS starts.

WebRTC encoders give every simulcast layer the same SPS/PPS ids, so an IDR forwarded without
its own layer's SPS/PPS is decoded with the previous layer's: garbage at the old size, and no
decode error that would make the subscriber ask for a keyframe. Seen in CI under load: a lost
STAP-A(SPS, PPS) left a subscriber on 1280x720 garbage for 20 s after it asked for 640x360.
"""

from __future__ import annotations

from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.rtp import URI_MID, URI_RID, parse_rtp
from tests.unit.test_forwarder import PUB, SUB, Clock, Sink, rtp

OUR_SSRC = 0x5EED0002
Q, F = 0x1111, 0x3333
SPS_PPS = bytes.fromhex("1800046742c01f000368ce3c")  # STAP-A (RFC 6184 §5.7.1): SPS, PPS
IDR_START = bytes.fromhex("7c85") + b"\x00" * 20  # FU-A (§5.8): first fragment of an IDR
IDR_END = bytes.fromhex("7c45") + b"\x00" * 20
DELTA = bytes.fromhex("419a20") + b"\x00" * 20  # a non-IDR slice


def payload(data: bytes) -> bytes:
    return data[parse_rtp(data).payload_offset :]


def packet(ssrc: int, seq: int, payload: bytes, rid: bytes = b"") -> bytes:
    ext = [(9, b"14"), (10, rid)] if rid else None
    return rtp(ssrc, seq, 3000 * seq, pt=102, payload=payload, ext=ext)


def setup(fwd: ForwardingPlane, pub_rtcp: Sink) -> Sink:
    fwd.add_uptrack(
        "TR_h264",
        "video",
        codecs={102: "video/H264"},
        extensions={9: URI_MID, 10: URI_RID},
        rids=["q", "f"],
        ssrcs={},
        mid="14",
        send_rtcp=pub_rtcp,
        publisher=PUB,
    )
    out = Sink()
    fwd.add_downtrack(
        "TR_h264",
        SUB,
        ssrc=OUR_SSRC,
        codecs={"video/h264": 102},
        extensions={},
        send_rtp=out,
        send_rtcp=Sink(),
    )
    return out


def test_a_layer_switch_waits_for_the_sps_not_for_the_idr() -> None:
    clock, pub_rtcp = Clock(), Sink()
    fwd = ForwardingPlane(clock=clock)
    out = setup(fwd, pub_rtcp)
    fwd.handle_rtp(PUB, packet(Q, 100, SPS_PPS, b"q"))
    fwd.handle_rtp(PUB, packet(F, 500, SPS_PPS, b"f"))
    for seq in (501, 502):
        fwd.handle_rtp(PUB, packet(F, seq, DELTA))
    assert [payload(p) for p in out.packets] == [SPS_PPS, SPS_PPS, DELTA, DELTA]  # q, then f

    clock.t += 1.0
    fwd.set_target_layer("TR_h264", SUB, 0)  # down to q; its SPS/PPS (seq 101) is lost
    sent = len(out.packets)
    fwd.handle_rtp(PUB, packet(Q, 102, IDR_START))
    fwd.handle_rtp(PUB, packet(F, 503, DELTA))
    fwd.handle_rtp(PUB, packet(Q, 103, IDR_END))
    assert len(out.packets) == sent + 1  # f continues; the IDR without its SPS is no switch

    clock.t += 0.5
    fwd.handle_rtp(PUB, packet(Q, 104, SPS_PPS))  # the next keyframe, whole: switch here
    fwd.handle_rtp(PUB, packet(Q, 105, IDR_START))
    fwd.handle_rtp(PUB, packet(F, 504, DELTA))  # f no longer
    assert [payload(p) for p in out.packets[sent + 1 :]] == [SPS_PPS, IDR_START]
