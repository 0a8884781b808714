"""Browser pages the server serves itself: the playground (``/``) and the dashboard.

Plain HTML/CSS/JS in ``static/`` (no build step) on top of the official ``livekit-client``
UMD bundle vendored in ``static/vendor`` by ``scripts/vendor-livekit-client.sh``.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"


def livekit_client_version() -> str:
    """The vendored livekit-client version ("" when the bundle is missing)."""
    try:
        return (VENDOR_DIR / "VERSION").read_text().strip()
    except OSError:
        return ""
