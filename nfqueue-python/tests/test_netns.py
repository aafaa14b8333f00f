"""The test topology itself: what it needs from the system, and where its
settings land."""

from __future__ import annotations

import time

import pytest

import netns
import userns
from netns import Router

# The programs the tests may start: those `cargo xtask prereqs` installs
# (iproute2, iptables). A new one must be added there first.
PROGRAMS = {"ip", "iptables", "ip6tables"}


def test_the_router_needs_only_ip_and_forwards_in_its_own_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = netns.tool

    def only_prereqs(name: str) -> str:
        if name not in PROGRAMS:
            raise FileNotFoundError(f"{name} is not one of the programs prereqs installs")
        return found(name)

    monkeypatch.setattr(netns, "tool", only_prereqs)
    topo = Router()
    try:
        def read(ns: netns.Netns, path: str) -> str:
            with ns.entered():
                with open(path) as fp:
                    return fp.read().strip()

        for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
            # On in R, and only there: a new namespace starts with forwarding off.
            assert (read(topo.r, path), read(topo.a, path), read(topo.b, path)) == ("1", "0", "0")
    finally:
        topo.close()


def test_the_payload_probe_comes_to_an_answer() -> None:
    started = time.monotonic()
    arrives = userns.payload_verdict_arrives()
    if userns.in_initial_user_namespace():
        assert arrives, "a payload verdict from the initial user namespace was dropped"
        assert time.monotonic() - started < 2, "no wait when the packets arrive"
        assert userns.payload_verdicts_dropped() is None
    else:
        # Either answer is the kernel's; the cached one agrees with it.
        assert (userns.payload_verdicts_dropped() is not None) == (not arrives)
