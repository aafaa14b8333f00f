"""The reference's exceptions: types and messages that programs match."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import warnings
import weakref

import pytest

from netfilterqueue import NetfilterQueue, Packet
from conftest import SOCK_LEN, Net, kernel_queues


def test_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        NetfilterQueue(2)  # type: ignore[misc]
    NetfilterQueue(af=socket.AF_INET6).unbind()


def test_bad_sockfd(net: Net) -> None:
    with pytest.raises(OSError, match="dup2 failed") as info:
        NetfilterQueue(sockfd=1000)
    assert info.value.errno == 9  # EBADF
    with open("/dev/null") as fp, pytest.raises(OSError, match="Failed to open NFQueue"):
        NetfilterQueue(sockfd=fp.fileno())


def test_sockfd_adopts_a_netlink_socket_and_leaves_it_to_the_caller(net: Net) -> None:
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    q = NetfilterQueue(sockfd=nl.fileno())
    net.queues.append(q)
    assert q.get_fd() != nl.fileno()
    q.bind(3, lambda p: p.accept(), sock_len=SOCK_LEN)
    assert [line[0] for line in kernel_queues()] == [3]
    nl.close()  # ours is a duplicate: the queue stays bound
    assert [line[0] for line in kernel_queues()] == [3]


def test_one_queue_per_object_and_per_number(net: Net) -> None:
    q = net.queue(0, lambda p: None)
    with pytest.raises(RuntimeError, match=r"^A queue is already bound; use unbind\(\) first$"):
        q.bind(1, lambda p: None)
    other = NetfilterQueue()
    with pytest.raises(OSError, match=r"^Failed to create queue 0\.$") as info:
        other.bind(0, lambda p: None, sock_len=SOCK_LEN)
    # The reference's message alone; what nfqueue-core knows is its cause.
    assert info.value.errno is None
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == 16
    assert "already bound by another socket" in str(cause)
    # The failed bind left it free to bind another number.
    other.bind(1, lambda p: None, sock_len=SOCK_LEN)
    other.unbind()
    with pytest.raises(OverflowError, match="0 to 65535"):
        other.bind(65536, lambda p: None)
    with pytest.raises(OSError, match="^Failed to set packet copy mode"):
        other.bind(2, lambda p: None, mode=7)
    assert [line[0] for line in kernel_queues()] == [0]


def test_rcvbuf_warning_names_the_caller(net: Net) -> None:
    q = NetfilterQueue()
    net.queues.append(q)
    with pytest.warns(RuntimeWarning, match=r"^Socket rcvbuf limit is now \d+, requested 1073741824\.$") as record:
        q.bind(0, lambda p: None, sock_len=2**30)
    assert record[0].filename == __file__
    assert [line[0] for line in kernel_queues()] == [0]


def test_rcvbuf_warning_as_error_unbinds_first(net: Net) -> None:
    q = NetfilterQueue()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="^Socket rcvbuf limit is now"):
            q.bind(0, lambda p: None, sock_len=2**30)
    assert kernel_queues() == []
    q.bind(0, lambda p: None, sock_len=SOCK_LEN)  # not left bound: binds again
    q.unbind()


def test_last_reference_unbinds_and_is_weakrefable(net: Net) -> None:
    q = NetfilterQueue()
    q.bind(5, lambda p: None, sock_len=SOCK_LEN)
    ref = weakref.ref(q)
    assert [line[0] for line in kernel_queues()] == [5]
    del q
    gc.collect()
    assert ref() is None
    assert kernel_queues() == []


def test_cycle_through_the_callback_is_collected(net: Net) -> None:
    class Holder:
        def __init__(self) -> None:
            self.q = NetfilterQueue()
            self.q.bind(6, self.cb, sock_len=SOCK_LEN)

        def cb(self, p: Packet) -> None:
            p.accept()

    ref = weakref.ref(Holder())
    gc.collect()
    assert ref() is None
    assert kernel_queues() == []


def test_set_payload_errors(net: Net) -> None:
    got = []

    def cb(p: Packet) -> None:
        with pytest.raises(ValueError, match="longer than"):
            p.set_payload(b"x" * 65536)
        with pytest.raises(TypeError, match=r"^Argument 'payload' has incorrect type \(expected bytes, got str\)$"):
            p.set_payload("text")  # type: ignore[arg-type]
        # Empty, as None, takes back an earlier set_payload (the reference
        # sends no payload for either).
        p.set_payload(b"changed")
        p.set_payload(b"")
        got.append(p.get_payload())  # unchanged by the refused calls
        p.accept()

    from conftest import serve

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.send(b"same")
    serve(q, lambda: len(got) == 1)
    net.expect(b"same")
    assert got[0].endswith(b"same")


def test_no_warnings_under_python_w_error(net: Net) -> None:
    # A program of the reference's kind in a child: it must not warn (nor fail).
    program = f"""
from netfilterqueue import NetfilterQueue
q = NetfilterQueue()
q.bind(0, lambda p: p.accept(), sock_len={SOCK_LEN})
q.run(block=False)
print(q.stats()["packets"])
q.unbind()
"""
    done = subprocess.run([sys.executable, "-W", "error", "-c", program],
                          capture_output=True, text=True, timeout=30, env=dict(os.environ))
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "0\n")
