"""Fixtures: a router topology per test, the queues bound in it, traffic helpers.

Every test runs inside the router's network namespace (R), so the queues it
opens and the iptables rules it adds are R's; peers A and B send and receive
through sockets made in their own namespaces. Teardown unbinds every queue and
checks that the kernel lists none, then removes the namespaces.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any, Callable, Iterator, List

import pytest

from netfilterqueue import NetfilterQueue, Packet
from netns import A, B, RB, Router

# A receive buffer every kernel grants unprivileged too (net.core.rmem_max is
# larger): no rcvbuf warning in the tests that do not look for one.
SOCK_LEN = 131072
# How long a test waits for a packet that should arrive.
TIMEOUT = 5.0


def kernel_queues() -> List[List[int]]:
    """The lines of /proc/net/netfilter/nfnetlink_queue of this thread's namespace."""
    try:
        with open("/proc/thread-self/net/netfilter/nfnetlink_queue") as fp:
            return [[int(f) for f in line.split()] for line in fp if line.strip()]
    except FileNotFoundError:
        return []


def waiting(queue_num: int) -> int:
    """How many packets wait for a verdict in queue ``queue_num`` (the kernel's count)."""
    for line in kernel_queues():
        if line[0] == queue_num:
            return line[2]
    raise AssertionError(f"queue {queue_num} is not bound")


class Net:
    """What a test gets: the topology, peer sockets, rules, counters, queues."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.queues: List[NetfilterQueue] = []
        self.a = router.a.udp_socket(A.ipv4)
        self.b = router.b.udp_socket(B.ipv4)
        self.b_port = self.b.getsockname()[1]

    def queue(self, num: int, callback: Callable[[Packet], Any], **options: Any) -> NetfilterQueue:
        """A NetfilterQueue bound to ``num``, unbound after the test."""
        q = NetfilterQueue()
        self.queues.append(q)
        options.setdefault("sock_len", SOCK_LEN)
        q.bind(num, callback, **options)
        return q

    def rule(self, *spec: str, table: str = "filter", ip6: bool = False) -> None:
        """Appends an iptables rule in the router (gone with its namespace)."""
        self.router.r.run("ip6tables" if ip6 else "iptables", "-w", "-t", table, "-A", *spec)

    def queue_forwarded(self, num: int, *match: str) -> None:
        """Queues UDP from A to B, as R forwards it, to queue ``num``."""
        self.rule("FORWARD", "-s", A.ipv4, "-d", B.ipv4, "-p", "udp", *match,
                  "-j", "NFQUEUE", "--queue-num", str(num))

    def send(self, *payloads: bytes) -> None:
        """Sends each payload from A to B's socket."""
        for payload in payloads:
            self.a.sendto(payload, (B.ipv4, self.b_port))

    def send_from_router(self, payload: bytes) -> None:
        """Sends a payload from R itself to B's socket (the OUTPUT hook)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as local:
            local.sendto(payload, (B.ipv4, self.b_port))

    def expect(self, *payloads: bytes) -> None:
        """B receives exactly these payloads, in this order."""
        got = []
        for _ in payloads:
            try:
                got.append(self.b.recv(70000))
            except TimeoutError:
                break
        assert got == list(payloads)

    def expect_nothing(self, within: float = 0.3) -> None:
        """B receives nothing for a while."""
        self.b.settimeout(within)
        try:
            data = self.b.recv(70000)
        except TimeoutError:
            return
        finally:
            self.b.settimeout(TIMEOUT)
        raise AssertionError(f"B received {data!r}")

    def close(self) -> None:
        for q in self.queues:
            q.unbind()
        self.a.close()
        self.b.close()


def serve(q: NetfilterQueue, until: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Runs ``q.run(block=False)`` whenever its socket is readable, until
    ``until()`` holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for packets")
        select.select([q.get_fd()], [], [], min(left, 0.1))
        q.run(block=False)


def rule_count(net: Net, chain: str, needle: str, table: str = "filter") -> int:
    """The packet counter of the first rule of ``chain`` whose text has ``needle``."""
    out = net.router.r.run("iptables", "-w", "-t", table, "-L", chain, "-n", "-v", "-x")
    for line in out.splitlines()[2:]:
        if needle in line:
            return int(line.split()[0])
    raise AssertionError(f"no rule with {needle!r} in {table} {chain}:\n{out}")


@pytest.fixture
def router() -> Iterator[Router]:
    topo = Router()
    try:
        yield topo
    finally:
        topo.close()


@pytest.fixture
def net(router: Router) -> Iterator[Net]:
    """The topology, with the test running inside R."""
    with router.r.entered():
        n = Net(router)
        try:
            yield n
        finally:
            n.close()
            # Nothing bound is left, so no packet waits in any queue.
            assert kernel_queues() == []


__all__ = ["Net", "RB", "SOCK_LEN", "TIMEOUT", "kernel_queues", "rule_count", "serve", "waiting"]
