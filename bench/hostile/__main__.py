"""Command line: ``python -m bench.hostile [--minutes 2] [--baseline 20] [--single-node]``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bench.hostile import __doc__ as description
from bench.hostile.render import render
from bench.hostile.runner import Options, run


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hostile",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=2.0, help="attack phase (default 2)")
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds (default 5)")
    nodes = parser.add_mutually_exclusive_group()
    nodes.add_argument("--multinode", dest="multinode", action="store_true", default=None)
    nodes.add_argument("--single-node", dest="multinode", action="store_false")
    parser.add_argument(
        "--idle-timeout", type=float, default=None, help="limit.http_idle_timeout of the nodes"
    )
    parser.add_argument(
        "--only", action="append", default=[], help="run only attacks named so (H1, M, ...)"
    )
    parser.add_argument("--skip", action="append", default=[], help="leave these attacks out")
    args = parser.parse_args()
    options = Options(
        args.minutes,
        args.baseline,
        args.warmup,
        args.multinode,
        args.idle_timeout,
        args.only,
        args.skip,
    )
    report = asyncio.run(run(options))
    print(render(report), flush=True)
    sys.exit(report.exit_code)


if __name__ == "__main__":
    main()
