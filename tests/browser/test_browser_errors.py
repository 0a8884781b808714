"""What the official npm `livekit-client` in Chromium tells its user when Roomcast refuses a
join: the reason from ``/rtc/validate``, which it reads after the WebSocket upgrade failed."""

from __future__ import annotations

from typing import Any

from roomcast.server import Server
from tests.browser.conftest import NewPage, requires_chromium
from tests.conftest import ServerFactory, url_of
from tests.integration.sdk import join_token, joined

pytestmark = requires_chromium

# Resolves with the ConnectionError's fields instead of throwing it.
TRY_CONNECT = """
async ([url, token]) => {
  const room = new window.LivekitClient.Room();
  try {
    await room.connect(url, token);
    await room.disconnect();
    return { connected: true };
  } catch (err) {
    return { name: err.name, message: err.message, status: err.status, reason: err.reasonName };
  }
}
"""


async def try_connect(new_page: NewPage, server: Server, token: str) -> dict[str, Any]:
    page = await new_page("refused")
    result: dict[str, Any] = await page.page.evaluate(TRY_CONNECT, [url_of(server, "ws"), token])
    return result


async def test_full_room_reason_reaches_livekit_client(
    start_server: ServerFactory, new_page: NewPage
) -> None:
    server: Server = await start_server("room:\n  max_participants: 1\n")
    async with joined(server, "full", "first"):
        result = await try_connect(new_page, server, join_token("full", "second"))
    # Room.connect prefixes the validate answer; the status is the refusal's.
    assert result["name"] == "ConnectionError" and result["status"] == 403, result
    assert result["message"].endswith(": room has exceeded its max participants (1)"), result


async def test_missing_room_and_bad_token_reasons_reach_livekit_client(
    start_server: ServerFactory, new_page: NewPage
) -> None:
    server: Server = await start_server("room:\n  auto_create: false\n")
    missing = await try_connect(new_page, server, join_token("nowhere", "ann"))
    assert missing["status"] == 404, missing
    assert missing["message"].endswith(": requested room does not exist"), missing
    forged = join_token("nowhere", "ann").rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
    refused = await try_connect(new_page, server, forged)
    assert refused["status"] == 401, refused
    assert "invalid authorization token: invalid token" in refused["message"], refused
