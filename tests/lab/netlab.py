"""A network lab on this machine: client networks in network namespaces, each behind its own
router namespace, which is where the firewall, the loss and the bandwidth caps are.

Topology of one client network (a `LabHost`; a lab has one or more around the same server):

    root namespace                 router namespace            client namespace
    server (this process)  ──veth──  up0   [iptables FORWARD,  down0 ──veth──  lab0
    on lab.server_ip             198.18.a.2  tbf both ways]  198.18.a.5      198.18.a.6
    198.18.a.1                       optional masquerade (NAT)

Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range, RFC 6890 §2.2.2): a /29 per
client network, split in two /30s. The client and router namespaces route that range (and
nothing else), so nothing started there can reach beyond this machine; the root namespace gets
one route per client network, on the lab's own veth (gone with it). The router forwards, so
its filter rules drop silently, as a real firewall does (a rule in the client's own OUTPUT chain
would instead fail the client's send() with EPERM). Impairments: blocking UDP (all, or one
port) or a TCP port, random loss with `iptables -m statistic` (this kernel has no netem), and a
bandwidth cap per direction with `tc ... tbf`.

`close()` deletes it all; `sweep_stale()` deletes what a crashed run left behind (names carry
the pid of the test process). Everything is synchronous `ip`/`iptables`/`tc` calls of a few
milliseconds: fine in fixtures and between the steps of a test.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
PREFIX = "rclab"  # namespaces rclab-<pid>-<n> (client) and rclab-<pid>-<n>r (router)
_NAMESPACE = re.compile(rf"^{PREFIX}-(\d+)-")
_ROOT_VETH = re.compile(r"^rcl(\d+)[hd](\d+)$")  # what may be left in the root namespace

Direction = Literal["down", "up", "both"]  # down: server → client, up: client → server


class LabError(RuntimeError):
    """A command of the lab failed; the message has the command and its stderr."""


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


def unavailable_reason() -> str | None:
    """Why the lab cannot run here, or None. CI runs as root with scripts/install-test-deps.sh."""
    if os.geteuid() != 0:
        return "the network lab needs root (network namespaces, veth, iptables, tc); CI runs so"
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing: install {package} (scripts/install-test-deps.sh)"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        run(["ip", "netns", "add", probe])
    except LabError as exc:
        return f"no network namespaces here: {exc}"
    try:
        result = run(["ip", "netns", "exec", probe, "iptables", "-w", "-S"], check=False)
        if result.returncode != 0:
            return f"iptables does not work in a namespace: {result.stderr.strip()}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete namespaces and veths of lab runs whose process is gone; returns their names."""
    removed = []
    for line in run(["ip", "netns", "list"]).stdout.splitlines():
        match = _NAMESPACE.match(line)
        if match and not _alive(int(match.group(1))):
            name = line.split()[0]
            run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    for line in run(["ip", "-o", "link", "show"]).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        match = _ROOT_VETH.match(name)
        if match and not _alive(int(match.group(1))):
            run(["ip", "link", "del", name], check=False)
            removed.append(name)
    return removed


def _used_lab_networks() -> set[ipaddress.IPv4Network]:
    """/29s of the lab range with an address in the root namespace (other labs' gateways)."""
    used = set()
    for line in run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            interface = ipaddress.ip_interface(fields[fields.index("inet") + 1])
            if interface.ip in LAB_RANGE:
                used.add(ipaddress.ip_network(f"{interface.ip}/29", strict=False))
    return used


@dataclass
class LabHost:
    """One client network: the client namespace, its router, and the router's impairments."""

    index: int
    namespace: str  # the client's
    router: str  # the router's namespace
    gateway: str  # root namespace side of the uplink (for host 0: the server address)
    router_ip: str  # the router's uplink address: where the server sees a NATed client from
    ip: str  # the client's address
    masquerade: bool = False

    @property
    def seen_as(self) -> str:
        """The address the server sees this client's packets come from."""
        return self.router_ip if self.masquerade else self.ip

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this client network."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def in_router(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.router, *argv]

    def forward_rule(self, *rule: str) -> None:
        """Append a rule to the router's FORWARD chain (its filter table is all ours)."""
        run(self.in_router("iptables", "-w", "-A", "FORWARD", *rule))

    def block_udp(self, to: str, port: int | None = None) -> None:
        """A firewall that silently drops UDP from the client to `to` (one port of it, or all)."""
        ports = ["--dport", str(port)] if port is not None else []
        self.forward_rule("-i", "down0", "-d", to, "-p", "udp", *ports, "-j", "DROP")

    def block_tcp(self, to: str, port: int) -> None:
        """A firewall that silently drops TCP to one port of `to`: connecting times out."""
        self.forward_rule("-i", "down0", "-d", to, "-p", "tcp", "--dport", str(port), "-j", "DROP")

    def drop(
        self, share: float, direction: Direction = "both", protocol: str | None = None
    ) -> None:
        """Drop a random `share` (0-1) of forwarded packets per direction, of one protocol or
        of all."""
        match = ["-p", protocol] if protocol else []
        statistic = ["-m", "statistic", "--mode", "random", "--probability", f"{share:.6f}"]
        if direction in ("down", "both"):
            self.forward_rule("-i", "up0", *match, *statistic, "-j", "DROP")
        if direction in ("up", "both"):
            self.forward_rule("-i", "down0", *match, *statistic, "-j", "DROP")

    def cap(
        self,
        kbit: int,
        direction: Direction = "down",
        *,
        burst_kbit: int = 32,
        latency_ms: int = 200,
    ) -> None:
        """Cap the bandwidth of a direction (tbf on the router's interface that way): what
        waits longer than `latency_ms` in the queue is dropped."""
        tbf = [
            "root", "tbf", "rate", f"{kbit}kbit", "burst", f"{burst_kbit}kbit",
            "latency", f"{latency_ms}ms",
        ]  # fmt: skip
        if direction in ("down", "both"):
            run(self.in_router("tc", "qdisc", "replace", "dev", "down0", *tbf))
        if direction in ("up", "both"):
            run(self.in_router("tc", "qdisc", "replace", "dev", "up0", *tbf))

    def clear(self) -> None:
        """Lift every impairment: flush the router's FORWARD chain, remove the caps."""
        run(self.in_router("iptables", "-w", "-F", "FORWARD"))
        for device in ("up0", "down0"):
            run(self.in_router("tc", "qdisc", "del", "dev", device, "root"), check=False)

    def counters(self) -> str:
        """The router's FORWARD chain with how many packets each rule matched."""
        return run(self.in_router("iptables", "-w", "-L", "FORWARD", "-n", "-v", "-x")).stdout


class NetworkLab:
    """Client networks around the root namespace; see the module docstring."""

    def __init__(self, hosts: int = 1, *, masquerade: bool = False) -> None:
        self.pid = os.getpid()
        self.hosts: list[LabHost] = []
        self._closed = False
        try:
            for _ in range(hosts):
                self.add_host(masquerade=masquerade)
        except BaseException:
            self.close()
            raise

    @property
    def server_ip(self) -> str:
        """Where the server listens: the first network's gateway (a root-namespace address)."""
        return self.hosts[0].gateway

    @property
    def host(self) -> LabHost:
        return self.hosts[0]

    def add_host(self, *, masquerade: bool = False) -> LabHost:
        """One more client network, behind its own router (NAT with `masquerade`)."""
        index, pid = len(self.hosts), self.pid
        block = self._free_block(index)
        gateway, router_ip, _, _, router_down, ip = (str(a) for a in list(block)[1:7])
        client, router = f"{PREFIX}-{pid}-{index}", f"{PREFIX}-{pid}-{index}r"
        host = LabHost(index, client, router, gateway, router_ip, ip, masquerade)
        self.hosts.append(host)  # before it is complete: close() removes whatever was made
        uplink, downlink = f"rcl{pid}h{index}", f"rcl{pid}d{index}"
        run(["ip", "netns", "add", router])
        run(["ip", "netns", "add", client])
        run(["ip", "link", "add", uplink, "type", "veth", "peer", "name", f"rcl{pid}u{index}"])
        run(["ip", "link", "set", f"rcl{pid}u{index}", "netns", router])
        run(["ip", "link", "add", downlink, "type", "veth", "peer", "name", f"rcl{pid}c{index}"])
        run(["ip", "link", "set", f"rcl{pid}c{index}", "netns", client])
        run(["ip", "link", "set", downlink, "netns", router])
        run(["ip", "addr", "add", f"{gateway}/30", "dev", uplink])
        run(["ip", "link", "set", uplink, "up"])
        client_net = ipaddress.ip_network(f"{ip}/30", strict=False)
        run(["ip", "route", "add", str(client_net), "via", router_ip, "dev", uplink])
        r = host.in_router
        for argv in (
            ["ip", "link", "set", f"rcl{pid}u{index}", "name", "up0"],
            ["ip", "link", "set", downlink, "name", "down0"],
            ["ip", "addr", "add", f"{router_ip}/30", "dev", "up0"],
            ["ip", "addr", "add", f"{router_down}/30", "dev", "down0"],
            ["ip", "link", "set", "up0", "up"],
            ["ip", "link", "set", "down0", "up"],
            ["ip", "link", "set", "lo", "up"],
            ["ip", "route", "add", str(LAB_RANGE), "via", gateway],
            ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],  # this namespace's own setting
            ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"],
        ):
            run(r(*argv))
        if masquerade:
            run(
                r(
                    "iptables",
                    "-w",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "up0",
                    "-j",
                    "MASQUERADE",
                )
            )
        c = host.command
        for argv in (
            # IPv4 only: no link-local IPv6 candidates for the clients to try and time out on.
            ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"],
            ["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"],
            ["ip", "link", "set", f"rcl{pid}c{index}", "name", "lab0"],
            ["ip", "addr", "add", f"{ip}/30", "dev", "lab0"],
            ["ip", "link", "set", "lab0", "up"],
            ["ip", "link", "set", "lo", "up"],
            ["ip", "route", "add", str(LAB_RANGE), "via", router_down],
        ):
            run(c(*argv))
        return host

    def _free_block(self, index: int) -> ipaddress.IPv4Network:
        used = _used_lab_networks()
        blocks = LAB_RANGE.num_addresses // 8
        start = (self.pid * 8 + index) % blocks
        for step in range(1, blocks):
            number = (start + step) % blocks
            block = ipaddress.IPv4Network((int(LAB_RANGE.network_address) + number * 8, 29))
            if block not in used:
                return block
        raise LabError("no free /29 left in 198.18.0.0/15")

    def close(self) -> None:
        """Delete every namespace and veth of the lab (processes in them must be gone)."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for host in self.hosts:
            for namespace in (host.namespace, host.router):
                result = run(["ip", "netns", "del", namespace], check=False)
                if result.returncode != 0 and "No such file" not in result.stderr:
                    errors.append(f"ip netns del {namespace}: {result.stderr.strip()}")
            # Deleting a namespace deletes its veth ends and so their peers; these cover a
            # host that was only half built.
            for link in (f"rcl{self.pid}h{host.index}", f"rcl{self.pid}d{host.index}"):
                result = run(["ip", "link", "del", link], check=False)
                if result.returncode != 0 and "Cannot find device" not in result.stderr:
                    errors.append(f"ip link del {link}: {result.stderr.strip()}")
        self.hosts.clear()
        if errors:
            raise LabError("; ".join(errors))
