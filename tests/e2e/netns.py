"""Hosts for multi-host tests: Linux network namespaces joined by a bridge.

Each "host" is a network namespace with its own address on a private bridge; every process
of that host is started inside it (`ip netns exec`), so a host is lost by killing every
process in its namespace. The test process itself stays in the root namespace, which has
an address on the bridge to reach the hosts. Needs root and iproute2; `available()` says
why not where they are missing, and tests skip with that reason.

The subnet is drawn at random among unused 10.x.y.0/24 networks, and everything is removed
on close, processes first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import signal
import subprocess
import uuid
from dataclasses import dataclass, field

from weir.processes import pid_runs


def _ip(*args: str, netns: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=10)


def available() -> str:
    """"" where namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"weir-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot make a network namespace here: {exc}"
    _ip("netns", "del", name, check=False)
    return ""


@dataclass
class Host:
    """One namespace: its name and address."""

    name: str
    address: str

    def command(self, *args: str) -> list[str]:
        """`args` run inside this host."""
        return ["ip", "netns", "exec", self.name, *args]

    def pids(self) -> list[int]:
        """Every process in this host."""
        out = _ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self) -> list[int]:
        """SIGKILL every process of this host (the host is lost); returns their PIDs."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        return pids


@dataclass
class Network:
    """A bridge and the hosts on it."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    hosts: list[Host] = field(default_factory=list)
    subnet: ipaddress.IPv4Network = field(default_factory=lambda: _free_subnet())
    _links: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"wbr{self.tag}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge."""
        return str(self.subnet.network_address + 1)

    def __enter__(self) -> Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self) -> Host:
        """A new namespace on the bridge, with loopback and its address up."""
        index = len(self.hosts) + 1
        name = f"weir-{self.tag}-{index}"
        address = str(self.subnet.network_address + 10 + index)
        outside, inside = f"wv{self.tag}{index}", "eth0"
        _ip("netns", "add", name)
        host = Host(name, address)
        self.hosts.append(host)
        _ip("link", "add", outside, "type", "veth", "peer", "name", f"wp{self.tag}{index}")
        self._links.append(outside)
        _ip("link", "set", f"wp{self.tag}{index}", "netns", name)
        _ip("link", "set", f"wp{self.tag}{index}", "name", inside, netns=name)
        _ip("addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", inside, netns=name)
        _ip("link", "set", inside, "up", netns=name)
        _ip("link", "set", "lo", "up", netns=name)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        return host

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            host.kill_all()
        for host in self.hosts:
            for pid in host.pids():
                if pid_runs(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            _ip("netns", "del", host.name, check=False)
        for link in reversed(self._links):
            _ip("link", "del", link, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 no route of this machine covers."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True,
                            check=False).stdout
    used = []
    for line in routes.splitlines():
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(line.split()[0], strict=False))
    rng = random.Random()
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{rng.randrange(64, 250)}.{rng.randrange(1, 250)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net  # type: ignore[return-value]
    raise RuntimeError("no free 10.x.y.0/24 subnet for the test hosts")
