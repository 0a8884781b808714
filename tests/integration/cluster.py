"""A real local cluster for multi-node tests: Debian's redis-server and `roomcast serve` nodes.

Everything listens on loopback on free ports. Node logs go to files that a failing test prints.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.conftest import API_KEY, API_SECRET, free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisServer:
    """A throw-away redis-server without persistence (a restart starts empty, the hard case)."""

    port: int = field(default_factory=free_port)
    password: str = ""
    tls: Path | None = None  # a directory with ca.pem, cert.pem, key.pem: TLS only
    proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        auth = ["--requirepass", self.password, "--masterauth", self.password]
        tls = []
        if self.tls is not None:
            tls = [
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls / "cert.pem"),
                "--tls-key-file", str(self.tls / "key.pem"),
                "--tls-ca-cert-file", str(self.tls / "ca.pem"),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            *tls,
            "--port",
            "0" if self.tls is not None else str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *(auth if self.password else []),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await _wait_for_port(self.port)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self.proc = None


@dataclass
class RedisSentinel:
    """redis-server in sentinel mode, watching one master as "mymaster"."""

    master: RedisServer
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sentinel-")))

    async def start(self) -> None:
        conf = self.workdir / "sentinel.conf"  # sentinel rewrites its config: a file of its own
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1",
        ]
        if self.master.password:
            lines.append(f"sentinel auth-pass mymaster {self.master.password}")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER, str(conf), "--sentinel",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await _wait_for_port(self.port)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def _wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"redis-server did not start on port {port}")


@dataclass
class Node:
    """One `roomcast serve` process joined to the cluster."""

    name: str
    redis: RedisServer
    extra_config: str = ""
    use_redis: bool = True  # False: a plain single node, for comparisons
    redis_config: str = ""  # the YAML under `redis:` instead of the plain address
    port: int = field(default_factory=free_port)
    udp_port: int = 0
    proc: asyncio.subprocess.Process | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".log")[1]))

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        import socket

        self.udp_port = free_port(socket.SOCK_DGRAM)
        redis = f"redis:\n  address: {self.redis.address}\n" if self.use_redis else ""
        if self.redis_config:
            redis = f"redis:\n{self.redis_config}"
        # Ties go to the local node (sort_by rooms): placement in these tests is predictable.
        config = (
            f"port: {self.port}\n"
            f"bind_addresses: [127.0.0.1]\n"
            f"keys:\n  {API_KEY}: {API_SECRET}\n"
            f"rtc:\n  udp_port: {self.udp_port}\n  tcp_port: {free_port()}\n"
            f"{redis}"
            "node_selector:\n  sort_by: rooms\n"
            "limit:\n  joins_per_second_per_ip: 0\n"
            "logging:\n  level: debug\n" + self.extra_config
        )
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "roomcast",
            "serve",
            "--config-body",
            config,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                assert self.proc.returncode is None, f"node {self.name} exited:\n{self.log()}"
                try:
                    async with session.get(self.http_url + "/") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"node {self.name} did not come up:\n{self.log()}")

    async def kill(self) -> None:
        """SIGKILL: no leave, no goodbye, as when a machine dies."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]


def make_tls_files(directory: Path) -> Path:
    """A throw-away CA and a server certificate for 127.0.0.1 (ca.pem, cert.pem, key.pem)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("roomcast test CA"))
        .issuer_name(name("roomcast test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory
