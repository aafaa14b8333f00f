"""Programs written for the reference run the same on ours, at the edges: each
program runs under both packages, and both must print the same, which is also
checked against what the reference is known to do."""

from __future__ import annotations

import textwrap

import pytest

import scripts
from conftest import Net
from scripts import both, loopback_rule


@pytest.fixture(autouse=True)
def rule(net: Net) -> None:
    loopback_rule(net)


def test_run_socket_waits_for_a_packet(net: Net) -> None:
    # Nothing of ours (no receive timeout) on the socket the program shares.
    out = both("""
        class Done(Exception):
            pass
        got = []
        def cb(p):
            got.append(time.monotonic())
            p.accept()
            raise Done
        q = NetfilterQueue()
        q.bind(0, cb, sock_len=131072)
        rx = receiver()
        # As the reference README makes it.
        s = socket.fromfd(q.get_fd(), socket.AF_UNIX, socket.SOCK_STREAM)
        start = time.monotonic()
        later(0.6, send, b"late")
        try:
            q.run_socket(s)
            print("returned after", round(time.monotonic() - start, 1), "s without a packet")
        except Done:
            print("waited for the packet:", got[0] - start > 0.5)
        print("arrived:", rx.recv(100))
        s.close()
        q.unbind()
    """)
    assert out == ["waited for the packet: True", "arrived: b'late'"]


def test_a_receive_timeout_the_program_sets_ends_run(net: Net) -> None:
    out = both("""
        handled = []
        def cb(p):
            handled.append(p.get_payload()[UDP_HEADERS:])
            p.accept()
        q = NetfilterQueue()
        q.bind(0, cb, sock_len=131072)
        rx = receiver()
        s = socket.fromfd(q.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 300000))
        start = time.monotonic()
        q.run()
        print("run() returned after the timeout:", 0.25 < time.monotonic() - start < 3)
        start = time.monotonic()
        q.run_socket(s)
        print("run_socket() returned after the timeout:", 0.25 < time.monotonic() - start < 3)
        # The idiom: a flag that SIGTERM's handler sets, checked between runs.
        stopping = []
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
        later(0.2, send, b"served")
        later(0.6, os.kill, os.getpid(), signal.SIGTERM)
        start = time.monotonic()
        while not stopping:
            q.run()
        print("ended after SIGTERM:", time.monotonic() - start < 3, handled)
        print("arrived:", rx.recv(100))
        q.unbind()
    """)
    assert out == [
        "run() returned after the timeout: True",
        "run_socket() returned after the timeout: True",
        "ended after SIGTERM: True [b'served']",
        "arrived: b'served'",
    ]


def test_verdicts_go_out_while_the_callback_goes_on(net: Net) -> None:
    # Delay, pacing and loss emulators give a verdict and then wait.
    out = both("""
        rx = receiver()
        arrivals = []
        def far_end():
            while True:
                try:
                    rx.recv(100)
                except OSError:
                    continue
                arrivals.append(time.monotonic())
        threading.Thread(target=far_end, daemon=True).start()
        def paced(order):
            def cb(p):
                if order == "sleep, accept":
                    time.sleep(0.15)
                    p.accept()
                else:
                    p.accept()
                    time.sleep(0.15)
            return cb
        for order in ("sleep, accept", "accept, sleep"):
            arrivals.clear()
            q = NetfilterQueue()
            q.bind(0, paced(order), sock_len=131072)
            send(b"1", b"2", b"3", b"4")
            time.sleep(0.2)
            start = time.monotonic()
            q.run(False)  # the four callbacks, 0.6 s
            time.sleep(0.1)
            offset = 0.15 if order == "sleep, accept" else 0.0
            on_time = [abs(t - start - offset - 0.15 * i) < 0.1 for i, t in enumerate(arrivals)]
            print(order, "- each packet when its verdict was given:", on_time)
            q.unbind()
        # A callback that waits for its own packet at the far end.
        def wait_for_it(p):
            before = len(arrivals)
            p.accept()
            deadline = time.monotonic() + 2
            while len(arrivals) == before and time.monotonic() < deadline:
                time.sleep(0.001)
            seen.append(len(arrivals) > before)
        seen = []
        q = NetfilterQueue()
        q.bind(0, wait_for_it, sock_len=131072)
        send(b"1", b"2", b"3")
        time.sleep(0.2)
        q.run(False)
        print("arrived while the callback waited:", seen)
        q.unbind()
    """)
    assert out == [
        "sleep, accept - each packet when its verdict was given: [True, True, True, True]",
        "accept, sleep - each packet when its verdict was given: [True, True, True, True]",
        "arrived while the callback waited: [True, True, True]",
    ]


def test_packets_unread_at_unbind_never_reach_the_next_binding(net: Net) -> None:
    # Ids start at 1 again: a verdict for an old packet would settle a new one.
    out = both("""
        rx = receiver()
        held = []
        def second(p):
            if p.get_payload()[UDP_HEADERS:].startswith(b"old"):
                p.accept()  # a verdict for a packet of the old binding
            else:
                held.append(p)  # new packets are held, with no verdict
        def first(p):
            raise KeyError("the rest of the burst stays unread")
        q = NetfilterQueue()
        for round in ("in the socket", "read, after a callback raised"):
            q.bind(0, first, sock_len=131072)
            send(b"old1", b"old2", b"old3")
            time.sleep(0.2)
            if round != "in the socket":
                try:
                    q.run(False)
                except KeyError:
                    pass
            q.unbind()
            q.bind(0, second, sock_len=131072)
            send(b"new1", b"new2", b"new3")
            serve(q, lambda: len(held) == 3)
            time.sleep(0.1)
            q.run(False)
            print(round, "- held:", [p.id for p in held], "delivered:", drain(rx))
            q.unbind()
            held.clear()
    """)
    assert out == ["in the socket - held: [1, 2, 3] delivered: []",
                   "read, after a callback raised - held: [1, 2, 3] delivered: []"]


def test_the_socket_stays_readable_after_a_callback_raises(net: Net) -> None:
    # Event loops watch get_fd() and call run(False): packets read already
    # must not wait there, unseen, for new traffic.
    out = both("""
        got = []
        def cb(p):
            got.append(p.get_payload()[UDP_HEADERS:])
            p.accept()
            if len(got) == 1:
                raise KeyError("first")
        q = NetfilterQueue()
        q.bind(0, cb, sock_len=131072)
        rx = receiver()
        send(b"a", b"b", b"c")
        time.sleep(0.2)
        try:
            q.run(False)
        except KeyError:
            print("raised")
        print("readable:", select.select([q.get_fd()], [], [], 1)[0] == [q.get_fd()])
        q.run(False)
        print("handled:", got)
        print("arrived:", [rx.recv(100) for _ in range(3)])
        q.unbind()
    """)
    assert out == ["raised", "readable: True", "handled: [b'a', b'b', b'c']",
                   "arrived: [b'a', b'b', b'c']"]


def test_a_nonblocking_socket_and_run_none_return_when_empty(net: Net) -> None:
    out = both("""
        got = []
        def cb(p):
            got.append(p.get_payload()[UDP_HEADERS:])
            p.accept()
        q = NetfilterQueue()
        q.bind(0, cb, sock_len=131072)
        start = time.monotonic()
        q.run(None)  # falsy: not blocking
        print("run(None) returned at once:", time.monotonic() - start < 1)
        # As the reference README suggests for run_socket.
        s = socket.fromfd(q.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
        s.setblocking(False)
        send(b"a", b"b")
        time.sleep(0.2)
        start = time.monotonic()
        q.run()
        print("run() on a non-blocking socket returned:", time.monotonic() - start < 1, got)
        send(b"c")
        time.sleep(0.2)
        start = time.monotonic()
        q.run_socket(s)
        print("run_socket() returned:", time.monotonic() - start < 1, got)
        s.close()
        q.unbind()
    """)
    assert out == [
        "run(None) returned at once: True",
        "run() on a non-blocking socket returned: True [b'a', b'b']",
        "run_socket() returned: True [b'a', b'b', b'c']",
    ]


def test_integer_arguments_convert_as_the_reference_converts(net: Net) -> None:
    # Cython's conversion: anything whose type has __int__, truncated; its
    # OverflowError messages. (Queue numbers out of 0-65535, modes other than
    # COPY_META and COPY_PACKET, and a max_len of 0 are refused by ours on
    # purpose: see test_safer_than_the_reference.)
    out = both("""
        from decimal import Decimal
        from fractions import Fraction
        class Index:
            def __index__(self):
                return 7
        class Int:
            def __int__(self):
                return 7
        class Sub(int):
            pass
        class SubInt:
            def __int__(self):
                return Sub(7)
        class FloatInt:
            def __int__(self):
                return 7.5
        common = [("7.0", 7.0), ("7.9", 7.9), ("Decimal", Decimal("7.5")),
                  ("Fraction", Fraction(15, 2)), ("__int__", Int()), ("__index__only", Index()),
                  ("str", "7"), ("None", None), ("True", True), ("sub-int__int__", SubInt()),
                  ("float__int__", FloatInt())]
        big = [("-1", -1), ("2**31", 2**31), ("2**32", 2**32), ("2**64", 2**64),
               ("-2**64", -2**64)]
        def attempt(label, f):
            try:
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    result = f()
                print(label, "->", result, [str(x.message)[:30] for x in w])
            except Exception as e:
                print(label, type(e).__name__, e)
        q = NetfilterQueue()
        def bind_with(**kwargs):
            q.bind(kwargs.pop("queue_num", 3), print, **kwargs)
            q.unbind()
            return "bound"
        for name, value in common + big[1:]:
            attempt(f"queue_num={name}", lambda: bind_with(queue_num=value, sock_len=131072))
        for arg, values in [("max_len", common + big + [("1e4", 1e4)]),
                            ("range", common + big + [("100.5", 100.5)]),
                            # (2**31 and more: the reference hands the kernel a
                            # negative size, and gets its smallest buffer.)
                            ("sock_len", [("131072.0", 131072.0), ("-1", -1), ("2**32", 2**32)]),
                            ("mode", [("1.5", 1.5), ("Decimal2", Decimal(2)), ("256", 256),
                                      ("str", "2"), ("None", None), ("-1", -1)])]:
            for name, value in values:
                kwargs = {arg: value}
                kwargs.setdefault("sock_len", 131072)
                attempt(f"{arg}={name}", lambda: bind_with(**kwargs))
        for name, value in common + big + [("x/2", 15 / 2)]:
            p = Packet()
            attempt(f"set_mark({name})", lambda: (p.set_mark(value), p.get_mark())[1])
        for name, value in [("2.0", 2.0), ("70000", 70000), ("-1", -1), ("str", "2")]:
            attempt(f"af={name}", lambda: NetfilterQueue(af=value).unbind())
        for name, value in [("-1.0", -1.0), ("1000.5", 1000.5), ("2**31", 2**31), ("str", "3")]:
            attempt(f"sockfd={name}", lambda: NetfilterQueue(sockfd=value).unbind())
    """)
    table = dict(line.split(" ", 1) for line in out)
    # Spot checks of what the reference does (the whole table is compared above).
    assert table["max_len=7.9"] == "-> bound []"
    assert table["queue_num=__index__only"] == "TypeError an integer is required"
    assert table["max_len=-1"] == "OverflowError can't convert negative value to u_int32_t"
    assert table["set_mark(x/2)"] == "-> 7 []"
    assert table["set_mark(2**32)"] == "OverflowError value too large to convert to u_int32_t"
    assert table["queue_num=2**31"] == "OverflowError value too large to convert to int"
    assert table["mode=256"] == "OverflowError value too large to convert to u_int8_t"
    assert table["sockfd=1000.5"] == "OSError [Errno 9] dup2 failed"


FULL_BUFFER = """
    warnings.simplefilter("ignore")  # a small buffer, on purpose
    q = NetfilterQueue()
    q.bind(0, lambda p: p.accept(), sock_len=4096)
    send(*[b"x" * 1000] * 40)  # far more than the buffer holds
    time.sleep(0.3)
    start = time.monotonic()
    q.unbind()
    print("unbind() returned at once:", time.monotonic() - start < 1)
"""


def test_unbind_with_a_full_receive_buffer_returns_at_once(net: Net) -> None:
    assert both(FULL_BUFFER) == ["unbind() returned at once: True"]
    # And the same object binds again, to hand out new packets only (the
    # reference then fails to bind: its unbind left answers in the socket).
    out = scripts.ours(textwrap.dedent(FULL_BUFFER) + textwrap.dedent("""
        got = []
        def cb(p):
            got.append(p.get_payload()[UDP_HEADERS:])
            p.accept()
        q.bind(0, cb, sock_len=131072)
        send(b"new")
        serve(q, lambda: got)
        time.sleep(0.1)
        q.run(False)
        print("then only new packets:", got)
        q.unbind()
    """))
    assert out == ["unbind() returned at once: True", "then only new packets: [b'new']"]


def test_a_packet_keeps_its_queue_alive(net: Net) -> None:
    out = both("""
        held = []
        q = NetfilterQueue()
        q.bind(0, held.append, sock_len=131072)
        rx = receiver()
        send(b"kept")
        serve(q, lambda: held)
        del q
        gc.collect()
        print("still bound:", waiting(0))
        held[0].accept()
        print("arrived:", rx.recv(100))
        del held[:]
        gc.collect()
        print("unbound with its last packet:", waiting(0))
    """)
    assert out == ["still bound: 1", "arrived: b'kept'", "unbound with its last packet: None"]


def test_unbind_and_bind_in_a_callback_keep_run_serving(net: Net) -> None:
    out = both("""
        class Done(Exception):
            pass
        seen = []
        def second(p):
            seen.append(("second", p.get_payload()[UDP_HEADERS:]))
            p.accept()
            if len(seen) == 3:
                raise Done
        def first(p):
            seen.append(("first", p.get_payload()[UDP_HEADERS:]))
            p.accept()
            q.unbind()
            q.bind(0, second, sock_len=131072)
            send(b"two", b"three")
        q = NetfilterQueue()
        q.bind(0, first, sock_len=131072)
        rx = receiver()
        later(0.2, send, b"one")
        signal.alarm(10)
        try:
            q.run()
        except Done:
            pass
        print(seen)
        print("arrived:", [rx.recv(100) for _ in range(3)])
        q.unbind()
    """)
    assert out == [
        "[('first', b'one'), ('second', b'two'), ('second', b'three')]",
        "arrived: [b'one', b'two', b'three']",
    ]


def test_signatures_fake_packets_and_none(net: Net) -> None:
    out = both("""
        rx = receiver()
        q = NetfilterQueue()
        q.bind(0, lambda p: p.accept(), sock_len=131072)
        s = socket.fromfd(q.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
        s.setblocking(False)
        q.run_socket(s=s)
        print("run_socket(s=...)")
        s.close()
        q.unbind()
        # Unit tests fake packets.
        p = Packet()
        print("Packet():", p.id, p.hook, p.mark, p.hw_protocol, p.indev, p.get_payload_len(),
              p.get_hw(), p.get_timestamp(), p.get_mark(), str(p))
        class FakePacket(Packet):
            def __init__(self, payload):
                self.payload_ = payload
            def get_payload(self):
                return self.payload_
        f = FakePacket(b"abc")
        print("FakePacket:", f.get_payload(), isinstance(f, Packet), f.id)
        # A subclass's __del__ calls the base's.
        class Queue(NetfilterQueue):
            def __del__(self):
                print("subclass __del__")
                super().__del__()
        sub = Queue()
        sub.bind(1, print, sock_len=131072)
        del sub
        gc.collect()
        print("queue 1 after del:", waiting(1))
        # bind(n, None): packets are read and ignored (left waiting).
        q = NetfilterQueue()
        q.bind(0, None, sock_len=131072)
        send(b"ignored")
        time.sleep(0.2)
        q.run(False)
        print("callback None, waiting:", waiting(0))
        q.unbind()
        # set_payload(None) takes back a set_payload().
        def cb(p):
            p.set_payload(p.get_payload()[:UDP_HEADERS] + b"CHANGED!")
            p.set_payload(None)
            p.accept()
            done.append(1)
        done = []
        q.bind(0, cb, sock_len=131072)
        send(b"original")
        serve(q, lambda: done)
        print("arrived:", rx.recv(100))
        q.unbind()
    """)
    assert out == [
        "run_socket(s=...)",
        "Packet(): 0 0 0 0 0 0 None 0.0 0 0 byte packet, contents unretained",
        "FakePacket: b'abc' True 0",
        "subclass __del__",
        "queue 1 after del: None",
        "callback None, waiting: 1",
        "arrived: b'original'",
    ]


def test_a_socket_the_program_closed(net: Net) -> None:
    # unbind() stays quiet; run() reports EBADF, from no descriptor of ours.
    out = both("""
        q = NetfilterQueue()
        q.bind(0, lambda p: p.accept(), sock_len=131072)
        os.close(q.get_fd())
        q.unbind()
        print("unbind() quiet")
        for block in (True, False):
            try:
                q.run(block)
            except OSError as e:
                print(f"run({block}):", e.errno, e.strerror)
        try:
            q.bind(1, print)
        except OSError as e:
            print("bind():", e)
    """)
    assert out == ["unbind() quiet", "run(True): 9 recv failed", "run(False): 9 recv failed",
                   "bind(): Failed to create queue 1."]


def test_exception_messages_are_the_references(net: Net) -> None:
    out = both("""
        def show(label, f):
            try:
                f()
                print(label, "no error")
            except Exception as e:
                print(label, type(e).__name__, repr(str(e)), e.errno if isinstance(e, OSError) else "")
        a = NetfilterQueue()
        a.bind(0, [].append, sock_len=131072)
        b = NetfilterQueue()
        show("taken:", lambda: b.bind(0, print, sock_len=131072))
        show("twice:", lambda: a.bind(1, print))
        show("sockfd:", lambda: NetfilterQueue(sockfd=1000))
        with open("/dev/null") as fp:
            show("not netlink:", lambda: NetfilterQueue(sockfd=fp.fileno()))
        show("no payload:", lambda: Packet().get_payload())
        show("not bytes:", lambda: Packet().set_payload("text"))
        held = []
        a.unbind()
        a.bind(0, held.append, sock_len=131072)
        send(b"x")
        serve(a, lambda: held)
        p = held[0]
        show("unretained:", p.get_payload)
        p.accept()
        show("again:", p.drop)
        send(b"y")
        serve(a, lambda: len(held) == 2)
        a.unbind()
        show("unbound:", held[1].accept)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            a.bind(2, print, sock_len=2**30)
            print("warning:", w[0].category.__name__, str(w[0].message)[:24])
        a.unbind()
    """)
    assert out[:3] == [
        "taken: OSError 'Failed to create queue 0.' None",
        "twice: RuntimeError 'A queue is already bound; use unbind() first' ",
        "sockfd: OSError '[Errno 9] dup2 failed' 9",
    ]


def test_messages_carry_the_detail_as_their_cause(net: Net) -> None:
    out = scripts.ours("""
        a = NetfilterQueue()
        a.bind(0, print, sock_len=131072)
        try:
            NetfilterQueue().bind(0, print, sock_len=131072)
        except OSError as e:
            print(str(e), "|", e.__cause__.errno, "already bound by another socket" in str(e.__cause__))
        a.unbind()
    """)
    assert out == ["Failed to create queue 0. | 16 True"]
