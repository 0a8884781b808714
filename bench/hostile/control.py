"""An idle HTTP server in a process of its own, probed like the nodes: what the machine alone
adds to a health check (the machine is shared; a check on it slows with everything else).

    python -m bench.hostile.control PORT
"""

from __future__ import annotations

import sys

from aiohttp import web


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_get("/", ok)
    try:
        import uvloop  # as `roomcast serve` runs

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
