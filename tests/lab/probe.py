"""Tiny network probes for the lab's own tests (tests/lab/test_netlab.py), run inside a client
network with `ip netns exec`. Prints one JSON object.

    probe.py udp HOST PORT COUNT         send COUNT numbered datagrams, about 10 a millisecond
    probe.py connect HOST PORT TIMEOUT   {"connected": bool}
    probe.py receive HOST PORT           connect, read until EOF: {"bytes", "seconds"}
    probe.py send HOST PORT BYTES        connect, send BYTES, wait for the peer to close
"""

from __future__ import annotations

import json
import socket
import sys
import time


def main(kind: str, host: str, port: str, arg: str = "0") -> dict[str, object]:
    address = (host, int(port))
    if kind == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(int(arg)):
                sock.sendto(b"%d" % i, address)
                if i % 20 == 19:
                    time.sleep(0.002)  # paced: no queue on the way overflows
        return {"sent": int(arg)}
    if kind == "connect":
        try:
            socket.create_connection(address, timeout=float(arg)).close()
        except OSError:
            return {"connected": False}
        return {"connected": True}
    with socket.create_connection(address, timeout=30) as sock:
        start = time.monotonic()
        if kind == "receive":
            total = 0
            while chunk := sock.recv(65536):
                total += len(chunk)
            return {"bytes": total, "seconds": time.monotonic() - start}
        sock.sendall(b"x" * int(arg))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the receiver closes once it has everything
        return {"bytes": int(arg), "seconds": time.monotonic() - start}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
