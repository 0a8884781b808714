"""5 % random packet loss on the client network (issue 15, 5e): audio and video keep decoding
and data flows, both ways, over UDP (NACK: the server resends from its cache what a subscriber
lost) and over ICE-TCP (TCP resends).

Loss is on UDP only, `iptables -m statistic` in the client's namespace; signalling stays on TCP
(on the TCP path, TCP is the media path and loses too). The far peer both publishes and
subscribes, so one direction of loss hits one media direction: "down" the media far receives,
"up" the media far publishes.
"""

from __future__ import annotations

import pytest

from roomcast.server import Server
from tests.lab import timings
from tests.lab.netlab import NetworkLab
from tests.lab.peers import Peers
from tests.lab.test_ice_paths import check_path, join_pair, media_and_data_flow

LOSS = 0.05
WINDOW = {"video": 100, "audible": 200}  # 5 s of 20 fps video; 2 s of audio (10 ms frames)
WORST_GAP = 1.0  # s between two decoded frames: lost packets recovered, no frozen picture
MIN_FPS = 10.0  # of the 20 sent (on a busy machine the sender makes 16-19)

UPSTREAM_NACK_MISSING = pytest.mark.xfail(
    reason="Roomcast does not NACK publishers yet (media/uptrack.py keeps a cache for "
    "subscribers' NACKs but requests nothing upstream): a packet lost on a publisher's uplink "
    "freezes that video for every subscriber until the next keyframe (measured: 3 s)",
    strict=False,
)


@pytest.mark.parametrize(
    ("protocol", "direction"),
    [
        ("udp", "down"),
        pytest.param("udp", "up", marks=UPSTREAM_NACK_MISSING),
        ("tcp", "both"),
    ],
)
async def test_five_percent_loss_keeps_media_decoding(
    lab: NetworkLab, lab_server: Server, peers: Peers, protocol: str, direction: str
) -> None:
    if protocol == "tcp":
        lab.host.block_udp(lab.server_ip)
    near, far = await join_pair(lab, lab_server, peers, f"loss-{protocol}-{direction}")
    await far.wait("connected")
    await media_and_data_flow(near, far, "before")
    await check_path(lab_server, lab, far, protocol)
    nacks_before = sum(d.nacks for d in lab_server.plane.downtracks())

    lab.host.drop(LOSS, direction, protocol=protocol)
    for peer in (near, far):
        await peer.command("mark")
    # far receives near's media over the lossy downlink, near far's over the lossy uplink.
    lossy = {"down": [far], "up": [near], "both": [far, near]}[direction]
    for peer in lossy:
        stats = await peer.command("frames", **WINDOW, within=30, timeout=35)
        counts, seconds = stats["since_mark"], stats["seconds_since_mark"]
        fps, gap = counts["video"] / seconds, stats["worst_video_gap"]
        timings.record(
            f"{protocol}: 5% loss {direction}", f"sdk {peer.name}", fps=fps, worst_gap=gap
        )
        assert gap < WORST_GAP, f"{peer.name}: a {gap:.2f} s freeze ({counts} in {seconds:.1f} s)"
        assert fps >= MIN_FPS, f"{peer.name}: {fps:.1f} fps decoded ({counts})"
        assert counts["audible"] >= 0.9 * counts["audio"], counts
    # The statistic rules did drop packets (their counters), and NACKs were answered.
    dropped = [line.split()[0] for line in lab.host.counters().splitlines() if "statistic" in line]
    assert sum(int(n) for n in dropped) > 0
    if protocol == "udp" and direction == "down":
        assert sum(d.nacks for d in lab_server.plane.downtracks()) > nacks_before
    await media_and_data_flow(near, far, "lossy")
