"""netfilterqueue: packets that Linux NFQUEUE rules queue, with a verdict each.

A drop-in for NetfilterQueue 1.1.0, built on the nfqueue Rust crates.
"""

from errno import EAGAIN, ENOBUFS, EWOULDBLOCK

from ._impl import (
    COPY_META as COPY_META,
    COPY_NONE as COPY_NONE,
    COPY_PACKET as COPY_PACKET,
    NFQUEUE_VERSION as NFQUEUE_VERSION,
    PROTOCOLS as PROTOCOLS,
    SKB_CSUM_NOT_READY as SKB_CSUM_NOT_READY,
    SKB_CSUM_NOT_VERIFIED as SKB_CSUM_NOT_VERIFIED,
    SKB_GSO as SKB_GSO,
    VERSION as VERSION,
    Packet as Packet,
    __version__ as __version__,
)
from ._impl import NetfilterQueue as _NativeQueue

# What run_socket() asks its socket for: the largest message the kernel sends
# for a packet (the reference's 4096 bytes cut longer packets short).
_RECV_SIZE = 128 * 1024


class NetfilterQueue(_NativeQueue):
    # The loops are Python code, so that a callback is never called from Rust:
    # a thread that CPython ends at shutdown (from wherever the callback waits)
    # unwinds through Python's own frames only, as with the reference.
    # Weak references and __del__ are declared here: the stable ABI of Python
    # 3.8 lets a native class declare neither.
    __doc__ = _NativeQueue.__doc__
    __slots__ = ("__weakref__",)

    def __del__(self):
        """Unbinds, as the reference's __del__ does."""
        self.unbind()

    def run(self, block=True, *, batch=False):
        """Calls the callback for every packet until an exception (from the
        callback, or a signal handler such as Ctrl-C's), stop(), unbind() from
        another thread, or, when the program set a receive timeout on the
        socket (SO_RCVTIMEO) or made it non-blocking, until none comes in time.
        With block=False, handles what is waiting and returns.

        A verdict given in a callback is sent at most 200 us after it was
        given, and the verdicts of a burst of fast callbacks together. With
        batch=True they wait for the last callback of the burst (up to 16
        packets), which saves system calls when callbacks take long.
        """
        if not self._begin(bool(block), bool(batch), False):
            return
        packets = None
        try:
            while True:
                # The packets of the binding bound now, for its callback; a
                # new binding (a callback may unbind and bind) starts anew.
                packets = self._packets()
                callback = packets.callback
                for packet in packets:
                    callback(packet)
                if packets.done:
                    return
        finally:
            self._end(packets)

    def run_socket(self, s):
        """As run(), but reads with s.recv(), so that a library such as
        gevent can make the wait cooperative. Returns when s has nothing more
        to read (a non-blocking socket, or SO_RCVTIMEO); other errors of
        s.recv() are raised, as they are by the reference."""
        if not self._begin(True, False, True):
            return
        feed = self._feed
        try:
            while True:
                try:
                    buf = s.recv(_RECV_SIZE)
                except OSError as e:
                    err = e.args[0]
                    if err == ENOBUFS:
                        self._overflowed()
                        continue
                    elif err == EAGAIN or err == EWOULDBLOCK:
                        # Only a non-blocking socket (or one with a receive
                        # timeout): call again when there is more.
                        break
                    else:
                        raise e
                else:
                    got = feed(buf)
                    if got is not None:
                        callback, packet = got
                        callback(packet)
        finally:
            self._end(None)

    # Tracebacks name the methods as the reference's do (programs and its
    # tests look for "NetfilterQueue.run").
    run.__code__ = run.__code__.replace(co_name="NetfilterQueue.run")
    run_socket.__code__ = run_socket.__code__.replace(co_name="NetfilterQueue.run_socket")


__all__ = [
    "COPY_META",
    "COPY_NONE",
    "COPY_PACKET",
    "NFQUEUE_VERSION",
    "NetfilterQueue",
    "PROTOCOLS",
    "Packet",
    "SKB_CSUM_NOT_READY",
    "SKB_CSUM_NOT_VERIFIED",
    "SKB_GSO",
    "VERSION",
    "__version__",
]
