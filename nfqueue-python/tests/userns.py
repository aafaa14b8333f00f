"""The user namespace the tests run in, and what the kernel lets a queue do
from there (the same probe as the Rust test kit's ``userns`` module).

Some kernels (6.18 builds among them) drop a packet whose verdict carries a
payload when the verdict comes from a socket in a non-initial user namespace:
no error comes back, the packet is simply gone. Whether this kernel does is
found out once per test process by trying it, with netlink code of its own
(not the module under test, so that a bug of the module cannot make its tests
skip).
"""

from __future__ import annotations

import functools
import os
import select
import socket
import struct
import sys
import time
from typing import Callable, Iterator, List, Optional, Tuple, TypeVar

from netns import Netns

REASON = (
    "the kernel drops a packet whose verdict carries a payload when the verdict comes "
    "from a non-initial user namespace (probed here: the payload verdict got no error, "
    "yet its packet never arrived; a plain accept did)"
)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND, NFQNL_COPY_PACKET = 1, 2
NF_ACCEPT = 1
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
QUEUE = 0
# How long the probe waits for a packet, from the queue or at the receiver.
WAIT = 2.0

T = TypeVar("T")


def in_initial_user_namespace() -> bool:
    """Whether this process runs in the initial user namespace: there, and only
    there, /proc/self/uid_map maps every uid to itself (``0 0 4294967295``)."""
    try:
        with open("/proc/self/uid_map") as fp:
            lines = [line.split() for line in fp if line.strip()]
    except OSError:
        return True  # nothing is skipped on a guess
    return lines == [["0", "0", "4294967295"]]


@functools.lru_cache(maxsize=None)
def payload_verdicts_dropped() -> Optional[str]:
    """Why a test that gives verdicts with a payload cannot run in this process,
    or None when it can. In the initial user namespace it is always None (no
    probe); elsewhere the probe runs once. An inconclusive probe is printed and
    also gives None, so the tests run and show what is wrong."""
    if in_initial_user_namespace():
        return None
    try:
        return None if payload_verdict_arrives() else REASON
    except (OSError, RuntimeError) as e:
        print(f"the payload-verdict probe could not tell: {e}", file=sys.stderr)
        return None


def payload_verdict_arrives() -> bool:
    """Gives one packet a verdict with a payload (its own bytes), from this
    process's user namespace, in a throwaway network namespace, and says whether
    it arrived. A plain accept goes first and must arrive, else the probe proves
    nothing (RuntimeError). Each wait is bounded by WAIT seconds."""
    ns = Netns("probe")
    try:
        with ns.entered():
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        with receiver, sender, nl:
            receiver.bind(("127.0.0.1", 0))
            receiver.settimeout(WAIT)
            port = receiver.getsockname()[1]
            ns.run("iptables", "-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", str(port),
                   "-j", "NFQUEUE", "--queue-num", str(QUEUE))
            nl.bind((0, 0))
            _request(nl, 1, NFQNL_MSG_CONFIG, [
                (NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)),
                (NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET)),
            ])

            def through(seq: int, datagram: bytes, with_payload: bool) -> bool:
                sender.sendto(datagram, ("127.0.0.1", port))
                packet_id, payload = _receive(nl, _packet)
                attrs = [(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))]
                if with_payload:
                    attrs.append((NFQA_PAYLOAD, payload))
                _request(nl, seq, NFQNL_MSG_VERDICT, attrs)
                try:
                    return receiver.recv(64) == datagram
                except TimeoutError:
                    return False

            if not through(2, b"plain accept", False):
                raise RuntimeError("a plain accept did not arrive either")
            return through(3, b"accept with the same payload", True)
    finally:
        ns.close()


def _message(kind: int, seq: int, attrs: List[Tuple[int, bytes]]) -> bytes:
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, QUEUE)
    for attr, value in attrs:
        body += struct.pack("=HH", 4 + len(value), attr) + value
        body += b"\0" * (-len(body) % 4)
    kind |= NFNL_SUBSYS_QUEUE << 8
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def _request(nl: socket.socket, seq: int, kind: int, attrs: List[Tuple[int, bytes]]) -> None:
    """Sends a request and waits for the kernel's acknowledgement."""
    nl.send(_message(kind, seq, attrs))

    def ack(kind: int, body: bytes) -> Optional[int]:
        if kind == NLMSG_ERROR and len(body) >= 16 and struct.unpack_from("=I", body, 12)[0] == seq:
            return int(struct.unpack_from("=i", body)[0])
        return None

    err = _receive(nl, ack)
    if err != 0:
        raise OSError(-err, f"the kernel answered: {os.strerror(-err)}")


def _packet(kind: int, body: bytes) -> Optional[Tuple[int, bytes]]:
    if kind != NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET:
        return None
    packet_id, payload = None, b""
    for attr, value in _attributes(body[4:]):
        if attr == NFQA_PACKET_HDR:
            packet_id = struct.unpack_from("!I", value)[0]
        elif attr == NFQA_PAYLOAD:
            payload = value
    if packet_id is None:
        raise RuntimeError("a packet message without an id")
    return packet_id, payload


def _attributes(body: bytes) -> Iterator[Tuple[int, bytes]]:
    while len(body) >= 4:
        length, attr = struct.unpack_from("=HH", body)
        if length < 4 or length > len(body):
            return
        yield attr & 0x3FFF, body[4:length]
        body = body[(length + 3) & ~3:]


def _receive(nl: socket.socket, pick: Callable[[int, bytes], Optional[T]]) -> T:
    """Reads messages until ``pick`` takes one, for at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"nothing came from the queue within {WAIT} s")
        if not select.select([nl], [], [], left)[0]:
            continue
        data = nl.recv(1 << 17)
        while len(data) >= 16:
            length, kind = struct.unpack_from("=IH", data)
            if length < 16 or length > len(data):
                break
            found = pick(kind, data[16:length])
            if found is not None:
                return found
            data = data[(length + 3) & ~3:]
