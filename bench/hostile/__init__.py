"""Every attack of the security review (issue 20) from one bounded process, for N minutes, while
honest participants on the official Python SDK talk; the server's health meanwhile.

From the repository's root (the bench is not part of `make test`):

    .venv/bin/python -m bench.hostile                 # 5 s warm-up, 20 s baseline, 2 min of attacks
    .venv/bin/python -m bench.hostile --minutes 1     # a smoke run (fractions work: --minutes 0.2)
    .venv/bin/python -m bench.hostile --minutes 5 --single-node --only H1 --skip M2

The servers run as `roomcast serve` subprocesses with the default limits: two nodes on a private
redis-server when `redis-server` is installed (for the multi-node attacks, H3 and M7), else one
node, and the multi-node attacks are left out with a line saying so. Honest participants
(bench/hostile/honest.py): one publishes audio and 640x360 video, two watch it (decoding every
frame) and play data ping-pong over the reliable channel. The attacker (bench/hostile/attacker.py)
is one process that runs each attack in a loop, paced (e.g. two 9.6 MB bodies every 2 s, one SCTP
flood burst a second), reusing the attack code of the integration tests, and comes back as
someone else when the server removes it. Attacks, by finding of the review: H1 SCTP TSN-gap
flood, H2 huge unauthenticated bodies and heavy JSON frames, H3 oversized relayed requests,
H4 subscription spam, M1 garbage-token join flood, M2 spoofed ICE consent, M3 revoked
subscription permission, M4 refresh-token replay, M5 /stats with roomList only, M6
never-acknowledging subscriber, M7 idle participants with big metadata, L1 /metrics on the
main port, L2 long tokens, L3 slowloris, L7 metadata flood and a non-reading signalling client;
and I3 pending-track spam (the per-participant bounds of item 3), UDP hostile datagrams at the
media port (tests/unit/test_hostile_input.py). L4 (short secrets), L5 (DTLS renegotiation),
L6 (publish kind) and L8 (dependency floors) are start-up or handshake checks with their own
tests, not load.

Printed, for a baseline phase (honest traffic alone) and the attack phase: health-check latency
(`GET /` every 50 ms per node, and on an idle control server) p50/p99/max, the honest watchers'
decoded frames/s and largest gap between frames, the data round trip p50/p99, each server's RSS
(and Redis's memory) at the start, every minute and at the end, the limits hit
(`roomcast_limit_hits_total` from each node's /metrics), per attack how often the server held,
and, because the machine may be shared, the CPU of every process of the run (nodes, redis,
control, this bench, the attacker), of everything else on the machine, the load average, and
for each slow health check how long the node's event loop ran and waited for a CPU. Exit code 0
when the targets hold (bench/hostile/report.py: health p99 < 100 ms, no frame gap > 500 ms,
memory flat, judged on 3 minutes of attacks or more, no attack succeeded), 1 otherwise, with
one line per target missed. Logs, and every sample as JSON, stay in the directory named at the
top; ``kill -USR1 <pid>`` makes a run that does not end print where it waits.

Figures and what the runs found: docs/security.md, "Under attack".
"""
