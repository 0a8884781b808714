"""A network lab on this machine: client networks in network namespaces, impaired on purpose.

Topology (a star; docs/network-lab.md):

    root namespace: the server (in the test process) on `lab.server_ip`, and any "near" peer
      ├─ veth ── namespace rclab-<pid>-0: a client network, 198.18.a.2/30, gateway 198.18.a.1
      └─ veth ── namespace rclab-<pid>-1: another one ...

Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range, RFC 6890 §2.2.2); every
namespace routes that range (and nothing else) to its gateway, so nothing a test starts there
can reach beyond this machine. Impairments live on the lab's own interfaces and in the client
namespaces' own iptables: blocking UDP or a port, random loss with `-m statistic` (this kernel
has no netem), and per-direction bandwidth caps with `tc ... tbf`. `close()` deletes it all;
`sweep_stale()` deletes what a crashed run left behind (namespaces named after a dead pid).

Everything is synchronous `ip`/`iptables`/`tc` calls of a few milliseconds: fine in fixtures and
between the steps of a test.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
PREFIX = "rclab"  # namespaces rclab-<pid>-<n>; root-side veths rcl<pid>h<n>
_NAMESPACE = re.compile(rf"^{PREFIX}-(\d+)-(\d+)\b")
_ROOT_VETH = re.compile(r"^rcl(\d+)h(\d+)\b")

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
        result = run(["ip", "netns", "exec", probe, "iptables", "-S"], check=False)
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
    used = set()
    for line in run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            interface = ipaddress.ip_interface(fields[fields.index("inet") + 1])
            if interface.ip in LAB_RANGE:
                used.add(ipaddress.ip_network(f"{interface.ip}/30", strict=False))
    return used


@dataclass
class LabHost:
    """One client network: a namespace behind a veth pair, and its impairments."""

    index: int
    namespace: str
    root_veth: str  # in the root namespace: its egress is the downlink
    inner_veth: str  # in the namespace: its egress is the uplink
    gateway: str  # root side of the /30
    ip: str  # the client's address
    rules: list[list[str]] = field(default_factory=list)  # iptables rules added, for reports

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this client network."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def iptables(self, chain: str, *rule: str) -> None:
        """Append a rule in this namespace's own filter table."""
        run(self.command("iptables", "-w", "-A", chain, *rule))
        self.rules.append([chain, *rule])

    def block_udp(self, to: str, port: int | None = None) -> None:
        """A firewall that drops UDP to `to` (to one port of it, or all)."""
        ports = ["--dport", str(port)] if port is not None else []
        self.iptables("OUTPUT", "-d", to, "-p", "udp", *ports, "-j", "DROP")

    def block_tcp(self, to: str, port: int) -> None:
        """A firewall that drops TCP to one port of `to` (connection attempts time out)."""
        self.iptables("OUTPUT", "-d", to, "-p", "tcp", "--dport", str(port), "-j", "DROP")

    def drop(
        self, share: float, direction: Direction = "both", protocol: str | None = None
    ) -> None:
        """Drop a random `share` (0-1) of packets per direction, of one protocol or all."""
        match = ["-p", protocol] if protocol else []
        statistic = ["-m", "statistic", "--mode", "random", "--probability", f"{share:.6f}"]
        if direction in ("down", "both"):
            self.iptables("INPUT", *match, *statistic, "-j", "DROP")
        if direction in ("up", "both"):
            self.iptables("OUTPUT", *match, *statistic, "-j", "DROP")

    def cap(
        self,
        kbit: int,
        direction: Direction = "down",
        *,
        burst_kbit: int = 32,
        latency_ms: int = 200,
    ) -> None:
        """Cap bandwidth (tbf) per direction: packets beyond `latency_ms` of queue are dropped."""
        tbf = [
            "root", "tbf", "rate", f"{kbit}kbit", "burst", f"{burst_kbit}kbit",
            "latency", f"{latency_ms}ms",
        ]  # fmt: skip
        if direction in ("down", "both"):
            run(["tc", "qdisc", "replace", "dev", self.root_veth, *tbf])
        if direction in ("up", "both"):
            run(self.command("tc", "qdisc", "replace", "dev", self.inner_veth, *tbf))

    def clear(self) -> None:
        """Lift every impairment: flush the namespace's iptables, remove the caps."""
        run(self.command("iptables", "-w", "-F"))
        self.rules.clear()
        run(["tc", "qdisc", "del", "dev", self.root_veth, "root"], check=False)
        run(self.command("tc", "qdisc", "del", "dev", self.inner_veth, "root"), check=False)

    def counters(self) -> str:
        """`iptables -L -v` of the namespace: how many packets each rule matched."""
        return run(self.command("iptables", "-w", "-L", "-n", "-v", "-x")).stdout


class NetworkLab:
    """Client networks in namespaces around the root namespace; see the module docstring."""

    def __init__(self, hosts: int = 1) -> None:
        self.pid = os.getpid()
        self.hosts: list[LabHost] = []
        self._closed = False
        try:
            for _ in range(hosts):
                self.add_host()
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

    def add_host(self) -> LabHost:
        index = len(self.hosts)
        namespace = f"{PREFIX}-{self.pid}-{index}"
        root_veth, inner_veth = f"rcl{self.pid}h{index}", f"rcl{self.pid}n{index}"
        network = self._free_network(index)
        gateway, ip = (str(address) for address in list(network.hosts())[:2])
        run(["ip", "netns", "add", namespace])
        # Registered before it is complete, so that close() removes whatever was made.
        host = LabHost(index, namespace, root_veth, "lab0", gateway, ip)
        self.hosts.append(host)
        run(["ip", "link", "add", root_veth, "type", "veth", "peer", "name", inner_veth])
        run(["ip", "link", "set", inner_veth, "netns", namespace])
        run(["ip", "addr", "add", f"{gateway}/30", "dev", root_veth])
        run(["ip", "link", "set", root_veth, "up"])
        inside = host.command
        # IPv4 only: no link-local IPv6 candidates for the clients to try and time out on.
        run(inside("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"))
        run(inside("sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"))
        run(inside("ip", "link", "set", inner_veth, "name", "lab0"))
        run(inside("ip", "addr", "add", f"{ip}/30", "dev", "lab0"))
        run(inside("ip", "link", "set", "lab0", "up"))
        run(inside("ip", "link", "set", "lo", "up"))
        # The other client networks' gateways (all root-namespace addresses) and nothing else.
        run(inside("ip", "route", "add", str(LAB_RANGE), "via", gateway))
        return host

    def _free_network(self, index: int) -> ipaddress.IPv4Network:
        used = _used_lab_networks()
        blocks = LAB_RANGE.num_addresses // 4
        start = (self.pid * 8 + index) % blocks
        for step in range(1, blocks):
            candidate = (start + step) % blocks
            network = ipaddress.ip_network(
                f"{LAB_RANGE.network_address + candidate * 4}/30", strict=True
            )
            if network not in used:
                return network  # type: ignore[return-value]
        raise LabError("no free /30 left in 198.18.0.0/15")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for host in self.hosts:
            # Deleting the namespace deletes its end of the veth, and with it the other end
            # (and the tbf on it); the explicit delete covers a half-built host.
            result = run(["ip", "netns", "del", host.namespace], check=False)
            if result.returncode != 0 and "No such file" not in result.stderr:
                errors.append(f"ip netns del {host.namespace}: {result.stderr.strip()}")
            result = run(["ip", "link", "del", host.root_veth], check=False)
            if result.returncode != 0 and "Cannot find device" not in result.stderr:
                errors.append(f"ip link del {host.root_veth}: {result.stderr.strip()}")
        self.hosts.clear()
        if errors:
            raise LabError("; ".join(errors))
