import asyncio
import time

from livekit import rtc

from tests.integration.sdk import joined
from tests.integration.test_svc import SIZES, FrameSizes, Quality, camera, subscribed_video


async def run(server):
    server.media.dynacast.pause_delay = 0.5
    options = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        simulcast=True,
        video_codec=rtc.VideoCodec.VP9,
        scalability_mode="L3T3_KEY",
    )
    async with (
        joined(server, "d", "viewer") as (_, events),
        joined(server, "d", "cam", options=rtc.RoomOptions(dynacast=True)) as (pub, pub_events),
        camera(pub, options),
    ):
        track, publication = await subscribed_video(events)
        sizes = FrameSizes(track)
        await sizes.until(SIZES[Quality.VIDEO_QUALITY_HIGH], 20)
        for q in (
            Quality.VIDEO_QUALITY_LOW,
            Quality.VIDEO_QUALITY_HIGH,
            Quality.VIDEO_QUALITY_MEDIUM,
        ):
            t0 = time.monotonic()
            publication.set_video_quality(q)
            await sizes.until(SIZES[q], 20)
            print(q, "reached in", round(time.monotonic() - t0, 2))
            await asyncio.sleep(2)  # past the dynacast pause delay
            up = [t for t in server.plane.uptracks() if t.kind == "video"][0]
            print("  uptrack packets", up.layers[0].packets)
        await sizes.aclose()


async def test_dyn(server):
    await run(server)
