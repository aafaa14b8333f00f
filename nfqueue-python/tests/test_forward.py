"""The reference's API on forwarded and locally sent packets, checked at B."""

from __future__ import annotations

import socket
import struct
import time
from typing import List

import pytest

import netfilterqueue
from netfilterqueue import COPY_META, COPY_PACKET, NetfilterQueue, Packet
from conftest import TIMEOUT, Net, rule_count, serve, waiting
from netns import A, B, RA, RB
import userns

UDP_HEADERS = 28  # IPv4 + UDP


def test_accept_and_drop_by_payload(net: Net) -> None:
    handled = []

    def cb(p: Packet) -> None:
        assert str(p) == f"UDP packet, {p.get_payload_len()} bytes"
        (p.drop if p.get_payload()[UDP_HEADERS:] == b"two" else p.accept)()
        handled.append(p)

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.send(b"one", b"two", b"three")
    serve(q, lambda: len(handled) == 3)
    net.expect(b"one", b"three")
    net.expect_nothing()


def test_metadata_of_forwarded_and_output_packets(net: Net) -> None:
    seen: List[tuple] = []

    def cb(p: Packet) -> None:
        seen.append((p.hook, p.hw_protocol, p.indev, p.outdev, p.physindev, p.physoutdev,
                     p.get_hw(), p.get_payload()[UDP_HEADERS:], p.id, p.mark))
        p.accept()

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.rule("OUTPUT", "-d", B.ipv4, "-p", "udp", "-j", "NFQUEUE", "--queue-num", "0")
    net.send(b"forwarded")
    serve(q, lambda: len(seen) == 1)
    net.send_from_router(b"sent by R")
    serve(q, lambda: len(seen) == 2)
    net.expect(b"forwarded", b"sent by R")
    ra, rb = net.router.ifindex(RA.name), net.router.ifindex(RB.name)
    a_mac = bytes.fromhex(A.mac.replace(":", ""))
    forward, output = seen
    # FORWARD: from A's MAC (exactly 6 bytes), in on veth-ra, out on veth-rb.
    assert forward[:8] == (2, 0x0800, ra, rb, 0, 0, a_mac, b"forwarded")
    # OUTPUT: no source MAC and no input interface.
    assert output[:8] == (3, 0x0800, 0, rb, 0, 0, None, b"sent by R")
    assert output[8] > forward[8] >= 1
    assert forward[9] == output[9] == 0


def test_set_payload_is_what_b_receives(net: Net) -> None:
    why = userns.payload_verdicts_dropped()
    if why:
        pytest.skip(why)
    handled = []

    def cb(p: Packet) -> None:
        handled.append(p)
        data = bytearray(p.get_payload())
        data[UDP_HEADERS:] = b"HELLO"  # same length: the lengths stay right
        data[26:28] = b"\x00\x00"  # no UDP checksum
        p.set_payload(bytes(data))
        assert p.get_payload() == bytes(data)
        assert p.get_payload_len() == len(data)
        p.accept()

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.send(b"hello")
    serve(q, lambda: len(handled) == 1)
    net.expect(b"HELLO")


def test_mark_is_matched_by_a_later_rule(net: Net) -> None:
    marks = []

    def cb(p: Packet) -> None:
        marks.append(p.get_mark())
        p.set_mark(0x7)
        assert (p.get_mark(), p.mark) == (0x7, 0)
        p.accept()

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.rule("POSTROUTING", "-d", B.ipv4, "-m", "mark", "--mark", "0x7", table="mangle")
    net.send(b"x", b"y")
    serve(q, lambda: len(marks) == 2)
    net.expect(b"x", b"y")
    assert marks == [0, 0]
    assert rule_count(net, "POSTROUTING", "mark match 0x7", table="mangle") == 2


def test_set_mark_with_a_mask_changes_only_its_bits(net: Net) -> None:
    # An earlier mangle rule marks every packet 0xff00; each payload says
    # what its callback does, and later rules count the marks that left.
    seen = []

    def cb(p: Packet) -> None:
        data = p.get_payload()[UDP_HEADERS:]
        if data == b"bits":
            p.set_mark(0x2a, mask=0xff)
        elif data == b"twice":
            p.set_mark(0x01, mask=0x0f)
            p.set_mark(0x2f, mask=0xf0)
        elif data == b"whole":
            p.set_mark(0x7)
        else:
            with pytest.raises(OverflowError):
                p.set_mark(1, mask=2**32)
            seen.append((data, p.mark, p.get_mark()))
            p.drop()
            return
        seen.append((data, p.mark, p.get_mark()))
        p.accept()

    net.rule("PREROUTING", "-s", A.ipv4, "-d", B.ipv4, "-j", "MARK", "--set-mark", "0xff00",
             table="mangle")
    q = net.queue(0, cb)
    net.queue_forwarded(0)
    for mark in ("0xff2a", "0xff21", "0x7"):
        net.rule("POSTROUTING", "-d", B.ipv4, "-m", "mark", "--mark", mark, table="mangle")
    net.send(b"bits", b"twice", b"whole", b"dropped")
    serve(q, lambda: len(seen) == 4)
    net.expect(b"bits", b"twice", b"whole")
    net.expect_nothing()
    assert seen == [
        (b"bits", 0xff00, 0xff2a),
        (b"twice", 0xff00, 0xff21),
        (b"whole", 0xff00, 0x7),
        (b"dropped", 0xff00, 0xff00),
    ]
    for mark in ("0xff2a", "0xff21", "0x7"):
        assert rule_count(net, "POSTROUTING", f"mark match {mark}", table="mangle") == 1


def test_repeat_keeps_mark_and_meets_the_rule_again(net: Net) -> None:
    rounds = []

    def cb(p: Packet) -> None:
        rounds.append(p.mark)
        with pytest.raises(RuntimeError, match=r"^Packet has no payload -- perhaps you're using COPY_META mode\?$"):
            p.get_payload()
        if p.mark < 3:
            p.set_mark(p.mark + 1)
            p.repeat()
        else:
            p.accept()

    q = net.queue(0, cb, mode=COPY_META)
    net.queue_forwarded(0)
    net.send(b"again")
    serve(q, lambda: len(rounds) == 4)
    net.expect(b"again")
    assert rounds == [0, 1, 2, 3]


def test_held_packets_get_verdicts_later_in_any_order(net: Net) -> None:
    held: List[Packet] = []

    def cb(p: Packet) -> None:
        p.retain()
        held.append(p)

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.send(b"1", b"2", b"3")
    serve(q, lambda: len(held) == 3)
    net.expect_nothing()
    assert waiting(0) == 3
    assert [p.get_payload()[UDP_HEADERS:] for p in held] == [b"1", b"2", b"3"]
    held[2].accept()
    held[0].accept()
    held[1].accept()
    net.expect(b"3", b"1", b"2")
    assert waiting(0) == 0


def test_unretained_payload_and_unverdicted_packet_until_unbind(net: Net) -> None:
    held: List[Packet] = []

    def cb(p: Packet) -> None:
        assert p.get_payload()[UDP_HEADERS:] == b"kept"
        held.append(p)

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.send(b"kept")
    serve(q, lambda: len(held) == 1)
    p = held[0]
    with pytest.raises(RuntimeError, match="^Payload data is no longer available"):
        p.get_payload()
    assert str(p) == f"{UDP_HEADERS + 4} byte packet, contents unretained"
    # Unverdicted, it stays queued.
    time.sleep(0.2)
    assert waiting(0) == 1
    net.expect_nothing()
    q.unbind()
    q.unbind()  # idempotent
    with pytest.raises(RuntimeError, match="^Parent queue has already been unbound$"):
        p.accept()
    net.expect_nothing()


def test_second_verdict_is_refused(net: Net) -> None:
    got: List[Packet] = []

    def cb(p: Packet) -> None:
        p.accept()
        with pytest.raises(RuntimeError, match="^Verdict already given for this packet$"):
            p.drop()
        got.append(p)

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.send(b"once")
    serve(q, lambda: len(got) == 1)
    net.expect(b"once")
    with pytest.raises(RuntimeError, match="^Verdict already given for this packet$"):
        got[0].accept()


def test_callback_exception_leaves_run_and_packet_waits(net: Net) -> None:
    got: List[Packet] = []

    def cb(p: Packet) -> None:
        got.append(p)
        raise ValueError("boom")

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.send(b"boom")
    with pytest.raises(ValueError, match="boom") as info:
        q.run()
    assert any("NetfilterQueue.run" in entry.name for entry in info.traceback)
    assert waiting(0) == 1
    net.expect_nothing()
    got[0].accept()
    net.expect(b"boom")


def test_exception_mid_burst_keeps_the_rest_for_the_next_run(net: Net) -> None:
    order: List[bytes] = []

    def cb(p: Packet) -> None:
        data = p.get_payload()[UDP_HEADERS:]
        order.append(data)
        p.accept()
        if data == b"2":
            raise KeyError("stop here")

    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.send(b"1", b"2", b"3", b"4")
    deadline = time.monotonic() + TIMEOUT
    while rule_count(net, "FORWARD", "NFQUEUE") < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(KeyError):
        q.run(block=False)
    # The verdicts given before the exception went out with it.
    net.expect(b"1", b"2")
    serve(q, lambda: len(order) == 4)
    net.expect(b"3", b"4")
    assert order == [b"1", b"2", b"3", b"4"]


def test_large_packets_arrive_whole(net: Net) -> None:
    sizes = []

    def cb(p: Packet) -> None:
        sizes.append((p.get_payload_len(), p.original_len, p.is_truncated))
        assert p.get_payload()[UDP_HEADERS:] == big
        p.accept()

    big = bytes(range(256)) * 200  # 51200 bytes, far over the reference's 4016
    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.send(big)
    serve(q, lambda: len(sizes) == 1)
    net.expect(big)
    assert sizes == [(len(big) + UDP_HEADERS, len(big) + UDP_HEADERS, False)]


def test_copy_range_truncates_and_says_so(net: Net) -> None:
    sizes = []

    def cb(p: Packet) -> None:
        sizes.append((p.get_payload_len(), p.original_len, p.is_truncated, len(p.get_payload())))
        p.accept()

    q = net.queue(0, cb, mode=COPY_PACKET, range=40)
    net.queue_forwarded(0)
    net.send(b"x" * 100)
    serve(q, lambda: len(sizes) == 1)
    net.expect(b"x" * 100)
    assert sizes == [(40, 128, True, 40)]


def test_ipv6_str_reads_the_next_header(net: Net) -> None:
    seen = []

    def cb(p: Packet) -> None:
        seen.append((str(p), p.hw_protocol))
        p.accept()

    q = net.queue(0, cb)
    with net.router.b.entered():
        b6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with net.router.a.entered():
        a6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with a6, b6:
        b6.bind((B.ipv6, 0))
        b6.settimeout(TIMEOUT)
        net.rule("FORWARD", "-d", B.ipv6, "-p", "udp", "-j", "NFQUEUE", "--queue-num", "0", ip6=True)
        a6.sendto(b"six", (B.ipv6, b6.getsockname()[1]))
        serve(q, lambda: len(seen) == 1)
        assert b6.recv(100) == b"six"
    # The reference reads byte 9 of an IPv6 header (a payload length byte) instead.
    assert seen == [("UDP packet, 51 bytes", 0x86DD)]


def test_timestamps(net: Net) -> None:
    stamps = []

    def cb(p: Packet) -> None:
        stamps.append((p.hook, p.get_timestamp()))
        p.accept()

    # Arriving packets are stamped while some socket asks for receive timestamps.
    net.b.setsockopt(socket.SOL_SOCKET, 29, 1)  # SO_TIMESTAMP
    q = net.queue(0, cb)
    net.queue_forwarded(0)
    net.rule("OUTPUT", "-d", B.ipv4, "-p", "udp", "-j", "NFQUEUE", "--queue-num", "0")
    before = time.time()
    net.send(b"stamped")
    serve(q, lambda: len(stamps) == 1)
    after = time.time()
    net.send_from_router(b"local")
    serve(q, lambda: len(stamps) == 2)
    net.expect(b"stamped", b"local")
    (fwd_hook, fwd_time), (out_hook, out_time) = stamps
    assert (fwd_hook, out_hook) == (2, 3)
    assert before - 1 < fwd_time < after + 1
    assert out_time == 0.0


def test_module_constants() -> None:
    assert (netfilterqueue.COPY_NONE, netfilterqueue.COPY_META, netfilterqueue.COPY_PACKET) == (0, 1, 2)
    assert netfilterqueue.PROTOCOLS[6] == "TCP" and netfilterqueue.PROTOCOLS[17] == "UDP"
    assert netfilterqueue.PROTOCOLS[58] == "IPv6-ICMP" and netfilterqueue.PROTOCOLS[255] == "Reserved"
    assert len(netfilterqueue.PROTOCOLS) == 142
    assert netfilterqueue.VERSION == (1, 1, 0) and netfilterqueue.__version__ == "1.1.0"
    assert repr(NetfilterQueue).endswith("'netfilterqueue.NetfilterQueue'>")
    assert repr(Packet) == "<class 'netfilterqueue.Packet'>"
    assert struct.calcsize("I") == 4
