"""One program, run under both packages named netfilterqueue: ours (the
venv's) and the reference, NetfilterQueue 1.1.0 from PyPI, which
``cargo xtask test-netns`` installs beside ours (``pip install --target
<venv>/reference``; the two cannot share site-packages).

A program runs in a child process inside the test's router namespace R, with
one rule that queues UDP to 127.0.0.1:9999 over loopback to queue 0: it sends
its own packets and receives them at the far end, a socket on that port. The
prelude below gives it the helpers.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, Tuple

import pytest

from conftest import Net

REFERENCE_DIR = Path(sys.prefix) / "reference"
PORT = 9999

PRELUDE = f"""
import gc, os, select, signal, socket, struct, sys, threading, time, warnings
import netfilterqueue
from netfilterqueue import NetfilterQueue, Packet

assert ("{REFERENCE_DIR}" in netfilterqueue.__file__) == (os.environ["NFQ_UNDER"] == "reference")
PORT = {PORT}
UDP_HEADERS = 28

def receiver(timeout=3.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", PORT))
    s.settimeout(timeout)
    return s

def send(*payloads):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, ("127.0.0.1", PORT))

def later(delay, f, *args):
    t = threading.Timer(delay, f, args)
    t.daemon = True
    t.start()
    return t

def drain(rx, within=0.3):
    # What arrives at the far end until nothing has for `within` seconds.
    got = []
    rx.settimeout(within)
    try:
        while True:
            got.append(rx.recv(70000))
    except (TimeoutError, socket.timeout):
        return got

def serve(q, until, timeout=5.0):
    # run(False) whenever the socket is readable, until until() holds.
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        select.select([q.get_fd()], [], [], 0.05)
        q.run(False)

def accept_unsent(q, payload):
    # Binds q to queue 0 with a callback that breaks the socket and then
    # accepts (every send fails from then on: ENOTSOCK), sends payload and
    # runs q once, printing the error; returns what mends the socket.
    null = os.open("/dev/null", os.O_RDWR)
    fd = q.get_fd()
    saved = os.dup(fd)
    def broken(p):
        os.dup2(null, fd)
        p.accept()
    q.bind(0, broken, sock_len=131072)
    send(payload)
    time.sleep(0.2)
    try:
        q.run(False)
    except OSError as e:
        print("run():", e.errno, e.strerror)
    return lambda: os.dup2(saved, fd)

def waiting(queue_num):
    with open("/proc/thread-self/net/netfilter/nfnetlink_queue") as fp:
        for line in fp:
            f = line.split()
            if int(f[0]) == queue_num:
                return int(f[2])
    return None
"""


def installed() -> bool:
    return (REFERENCE_DIR / "netfilterqueue").is_dir()


def loopback_rule(net: Net, queue: int = 0) -> None:
    """Queues the programs' UDP to 127.0.0.1:PORT (loopback, OUTPUT) to ``queue``."""
    net.rule("OUTPUT", "-o", "lo", "-p", "udp", "--dport", str(PORT),
             "-j", "NFQUEUE", "--queue-num", str(queue))


def run(source: str, *, reference: bool = False, args: Tuple[str, ...] = (),
        timeout: float = 30) -> subprocess.CompletedProcess:
    """Runs ``source`` (after the prelude) under one package; a program that
    does not end in ``timeout`` seconds is killed and reported as exit 124."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["NFQ_UNDER"] = "reference" if reference else "ours"
    if reference:
        env["PYTHONPATH"] = str(REFERENCE_DIR)
    # Python ignores SIGINT when started with it ignored; restore the default.
    prelude = PRELUDE + "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    command = [sys.executable, "-c", prelude + textwrap.dedent(source), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as timed_out:
        def text(out: object) -> str:
            return out.decode() if isinstance(out, bytes) else str(out or "")
        return subprocess.CompletedProcess(command, 124, text(timed_out.stdout),
                                           text(timed_out.stderr) + f"\n(killed after {timeout} s)")


def ours(source: str, **kwargs: object) -> List[str]:
    """The lines ``source`` prints under our package; it must exit 0."""
    done = run(source, **kwargs)  # type: ignore[arg-type]
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout.splitlines()


def both(source: str, **kwargs: object) -> List[str]:
    """Runs ``source`` under the reference and under ours: both must exit 0
    and print the same lines, which are returned."""
    if not installed():
        pytest.skip(f"the reference package is not in {REFERENCE_DIR}: "
                    f"pip install --target {REFERENCE_DIR} NetfilterQueue==1.1.0")
    reference = run(source, reference=True, **kwargs)  # type: ignore[arg-type]
    assert reference.returncode == 0, (
        f"under the reference: exit {reference.returncode}\n{reference.stdout}\n{reference.stderr}")
    mine = ours(source, **kwargs)
    theirs = reference.stdout.splitlines()
    diff = "\n".join(difflib.unified_diff(theirs, mine, "reference", "ours", lineterm=""))
    assert mine == theirs, f"ours and the reference differ:\n{diff}"
    return mine


__all__ = ["PORT", "both", "installed", "loopback_rule", "ours", "run"]
