"""Every attack of the security review (issue 20) from one bounded process, for N minutes, while
honest participants on the official Python SDK talk; the server's health meanwhile.

    python -m bench.hostile                  # 20 s baseline, then 2 minutes of attacks
    python -m bench.hostile --minutes 10 --single-node

The servers run as `roomcast serve` subprocesses with the default limits: two nodes on a private
redis-server when `redis-server` is installed (for the multi-node attacks, H3 and M7), else one.
Honest participants (bench/hostile/honest.py): one publishes audio and 640x360 video, two watch
it and play data ping-pong. The attacker (bench/hostile/attacker.py) runs each attack in a loop,
paced (e.g. two 9.6 MB bodies every 2 s, one SCTP flood burst a second), reusing the attack code
of the integration tests, and restarts an attacker the server removed as someone else.

Printed for a baseline phase (honest traffic alone) and the attack phase: health-check latency
(`GET /` every 50 ms per node) p50/p99/max, the decoded frames/s and the largest gap between
frames at each watcher, the data round trip p50/p99, RSS (and Redis memory) over time, the
limits hit, and per attack how often the server held. Exit code 0 when the targets hold
(bench/hostile/report.py), 1 otherwise, with one line per target missed.
"""
