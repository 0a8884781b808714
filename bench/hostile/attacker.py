"""The attacker: every attack of the security review, from this one process, for a while.

    python -m bench.hostile.attacker '<plan as JSON>'

Started by bench/hostile/runner.py (never by hand) so that its own CPU time is not the
measuring process's. Runs each attack's cycle in a loop of its own (framework.run_attack)
until the plan's time is up, lets every cycle in progress finish, then prints one line,
``RESULT <json list of tallies>``, on stdout (and ``ATTACKING`` when the attacks start): the
attack phase is the time between the two.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import asdict

import aiohttp

from bench.hostile import cluster_attacks, edge_attacks, media_attacks, room_attacks
from bench.hostile.framework import Attack, Context, Plan, Tally, run_attack, stacks_on_signals

RESULT_PREFIX = "RESULT "
STARTED = "ATTACKING"


STAGGER = 0.5  # s between the starts of two attacks


def attacks_for(plan: Plan) -> list[Attack]:
    attacks = [*media_attacks.ATTACKS, *edge_attacks.ATTACKS, *room_attacks.ATTACKS]
    if plan.redis_port and len(plan.nodes) > 1:
        attacks += cluster_attacks.ATTACKS
    if plan.only:
        attacks = [a for a in attacks if a.name.startswith(tuple(plan.only))]
    return [a for a in attacks if not a.name.startswith(tuple(plan.skip))]


async def attack(plan: Plan) -> list[Tally]:
    stacks_on_signals()
    attacks = attacks_for(plan)
    tallies = [Tally(a.name, a.kind) for a in attacks]
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        context = Context(plan, http)
        print(STARTED, flush=True)
        loops = [
            asyncio.ensure_future(run_attack(a, context, t, i * STAGGER))
            for i, (a, t) in enumerate(zip(attacks, tallies, strict=True))
        ]
        await asyncio.sleep(plan.seconds)
        context.stop.set()
        await asyncio.gather(*loops)
        # Now, not after this process's teardown: the attack phase ends here.
        print(RESULT_PREFIX + json.dumps([asdict(t) for t in tallies]), flush=True)
    return tallies


def main() -> None:
    plan = Plan.from_json(sys.argv[1])
    logging.getLogger("livekit").setLevel(logging.ERROR)
    asyncio.run(attack(plan))


if __name__ == "__main__":
    main()
