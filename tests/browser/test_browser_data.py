"""Headless Chromium running the official npm `livekit-client` joins Roomcast next to a Python
SDK participant: they see each other and exchange data packets both ways."""

from __future__ import annotations

import pytest

from roomcast.server import Server
from tests.browser.conftest import NewPage, requires_chromium
from tests.conftest import url_of
from tests.integration.sdk import join_token, joined

pytestmark = [requires_chromium, pytest.mark.usefixtures("signalling")]


async def test_browser_and_python_see_each_other_and_exchange_data(
    server: Server, new_page: NewPage
) -> None:
    page = await new_page("chrome")
    info = await page.join(url_of(server, "ws"), join_token("web", "chrome", name="Chrome"))
    assert info["sid"].startswith("PA_") and info["identity"] == "chrome"
    assert info["room"] == "web"

    async with joined(server, "web", "py") as (py, events):
        # Python sees the browser (already in the room); the browser sees Python join.
        assert "chrome" in py.remote_participants, list(py.remote_participants)
        assert py.remote_participants["chrome"].name == "Chrome"
        seen = await page.wait_for_participant("py")
        assert seen["sid"] == py.local_participant.sid and seen["tracks"] == []
        assert [p["identity"] for p in await page.remote_participants()] == ["py"]

        # browser -> python, reliable and lossy, with topics
        await page.publish_data("from the browser", "web")
        (packet,) = await events.wait("data_received", lambda p: p.data == b"from the browser")
        assert packet.participant.identity == "chrome" and packet.topic == "web"
        await page.publish_data("lossy from the browser", "web-lossy", reliable=False)
        (packet,) = await events.wait(
            "data_received", lambda p: p.data == b"lossy from the browser"
        )
        assert packet.participant.identity == "chrome" and packet.topic == "web-lossy"

        # python -> browser, reliable and lossy, with topics
        await py.local_participant.publish_data(b"from python", topic="py")
        received = await page.wait_for_data(text="from python")
        assert received == {"text": "from python", "from": "py", "topic": "py", "kind": "reliable"}
        await py.local_participant.publish_data(b"lossy from python", reliable=False, topic="py-l")
        received = await page.wait_for_data(text="lossy from python")
        assert received == {
            "text": "lossy from python",
            "from": "py",
            "topic": "py-l",
            "kind": "lossy",
        }

        # the browser leaves: Python is told
        await page.leave()
        await events.wait("participant_disconnected", lambda p: p.identity == "chrome")
        assert "chrome" not in py.remote_participants
    assert not page.page_errors, await page.diagnostics()
