"""Throwaway network namespaces for the tests, and the router topology.

A namespace lives as long as an open file of it: closing it (or the test
process dying) makes the kernel remove it with its interfaces, routes and
iptables rules, so nothing is left behind, also when a test fails. Namespaces
are made with unshare(2) and entered with setns(2) on the calling thread only,
which needs no /run/netns and works as root and inside
``unshare --user --map-root-user --net`` alike.

The topology is the one of the Rust tests (testkit's ``Router``)::

    A (veth-a) <-> (veth-ra) R (veth-rb) <-> (veth-b) B
      10.200.1.2   10.200.1.1  10.200.2.1      10.200.2.2
      fd00:201::2  fd00:201::1 fd00:202::1     fd00:202::2
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# Interfaces carry packets up to this size, so that large payloads arrive whole.
MTU = 65000


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _current() -> int:
    # thread-self, not self: a namespace belongs to a thread.
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def tool(name: str) -> str:
    """The path of a system tool, also when PATH lacks the sbin directories."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed")
    return found


class Netns:
    """A new, empty network namespace (only ``lo``, which is brought up)."""

    def __init__(self, name: str) -> None:
        self.name = name
        home = _current()
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            self.fd: Optional[int] = _current()
        finally:
            _setns(home)
            os.close(home)
        self.run("ip", "link", "set", "lo", "up")

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Runs the body (and what it starts: threads, processes, sockets) in here."""
        assert self.fd is not None, f"namespace {self.name} is closed"
        home = _current()
        _setns(self.fd)
        try:
            yield
        finally:
            _setns(home)
            os.close(home)

    def run(self, *cmd: str, check: bool = True) -> str:
        """Runs a system tool in here; returns its output, raises on failure."""
        with self.entered():
            done = subprocess.run(
                [tool(cmd[0]), *cmd[1:]],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=20,
            )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"[{self.name}] {' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout

    def write(self, path: str, value: str) -> None:
        """Writes a file of /proc/sys/net in here: it shows the namespace of the
        thread that opens it (so no sysctl program is needed)."""
        with self.entered():
            with open(path, "w") as fp:
                fp.write(value)

    def udp_socket(self, addr: str, port: int = 0, family: int = socket.AF_INET) -> socket.socket:
        """A UDP socket of this namespace, bound to addr:port, with a timeout."""
        with self.entered():
            sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((addr, port))
        sock.settimeout(5)
        return sock

    def path_arg(self) -> str:
        """This namespace as ``ip ... netns`` takes it: a path to an open file."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class Iface:
    name: str
    mac: str
    ipv4: str
    ipv6: str


A = Iface("veth-a", "02:00:00:00:01:0a", "10.200.1.2", "fd00:201::2")
RA = Iface("veth-ra", "02:00:00:00:01:01", "10.200.1.1", "fd00:201::1")
RB = Iface("veth-rb", "02:00:00:00:02:01", "10.200.2.1", "fd00:202::1")
B = Iface("veth-b", "02:00:00:00:02:0b", "10.200.2.2", "fd00:202::2")


class Router:
    """Peers A and B, and the router R between them, forwarding IPv4 and IPv6."""

    def __init__(self) -> None:
        self.all: List[Netns] = []
        try:
            self.a = self._ns("A")
            self.r = self._ns("R")
            self.b = self._ns("B")
            self._link(self.a, A, RA)
            self._link(self.b, B, RB)
            for peer, here, there in ((self.a, A, RA), (self.b, B, RB)):
                peer.run("ip", "route", "add", "default", "via", there.ipv4)
                peer.run("ip", "-6", "route", "add", "default", "via", there.ipv6)
            self.r.write("/proc/sys/net/ipv4/ip_forward", "1")
            self.r.write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _ns(self, name: str) -> Netns:
        ns = Netns(name)
        self.all.append(ns)
        return ns

    def _link(self, peer: Netns, end: Iface, router_end: Iface) -> None:
        # Made in the router; one end moved to the peer by a path to its file.
        self.r.run(
            "ip", "link", "add", router_end.name, "address", router_end.mac, "mtu", str(MTU),
            "type", "veth", "peer", "name", end.name, "address", end.mac, "mtu", str(MTU),
            "netns", peer.path_arg(),
        )
        for ns, here, there in ((self.r, router_end, end), (peer, end, router_end)):
            ns.run("ip", "addr", "add", f"{here.ipv4}/24", "dev", here.name)
            ns.run("ip", "-6", "addr", "add", f"{here.ipv6}/64", "dev", here.name, "nodad")
            ns.run("ip", "link", "set", here.name, "up")
            # Static neighbours: no ARP or neighbour discovery on the links.
            for addr in (there.ipv4, there.ipv6):
                ns.run("ip", "neigh", "replace", addr, "lladdr", there.mac,
                       "dev", here.name, "nud", "permanent")

    def _wait_ready(self) -> None:
        # A packet sent before a link's carrier is up is dropped silently.
        deadline = time.monotonic() + 5
        names = ((self.a, A), (self.r, RA), (self.r, RB), (self.b, B))
        while time.monotonic() < deadline:
            if all("LOWER_UP" in ns.run("ip", "link", "show", i.name) for ns, i in names):
                return
            time.sleep(0.02)
        raise RuntimeError("the veth links did not come up in 5 s")

    def ifindex(self, name: str) -> int:
        """The index of interface ``name`` in the router."""
        with self.r.entered():
            return socket.if_nametoindex(name)

    def close(self) -> None:
        for ns in self.all:
            ns.close()
