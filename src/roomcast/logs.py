"""Logging set-up: readable console lines, or one JSON object per line (``logging.json``).

Every record carries the process's context (``set_context``): the node id and, with
``serve --workers``, the worker index, so the lines of several workers (or nodes writing to one
place) can be told apart. The console shows it as a tag after the level (``[ND_x8Kq2mZp w1]``);
JSON lines as the ``node`` and ``worker`` fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "context",
}

# Process-wide fields added to every record: node, worker, or process ("supervisor").
_context: dict[str, str | int] = {}


def set_context(**fields: str | int | None) -> None:
    """Replace the fields every record carries from now on (None leaves one out)."""
    _context.clear()
    _context.update({key: value for key, value in fields.items() if value is not None})


def context_tag() -> str:
    """The console form of the context: ``[ND_x8Kq2mZp w1] `` (empty without context)."""
    parts = [f"w{value}" if key == "worker" else str(value) for key, value in _context.items()]
    return f"[{' '.join(parts)}] " if parts else ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            **_context,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.context = context_tag()
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        if extras:
            line += "  " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


CONSOLE_FORMAT = "%(asctime)s %(levelname)-5s %(context)s%(name)s: %(message)s"


def setup_logging(level: str, as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ConsoleFormatter(CONSOLE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    name = level.upper()
    root.setLevel("WARNING" if name == "WARN" else name)
    # Third-party debug output drowns ours; keep it at warnings.
    for noisy in ("aioice", "aiortc", "asyncio", "aiohttp.access", "redis"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
