"""netfilterqueue: packets that Linux NFQUEUE rules queue, with a verdict each.

A drop-in for NetfilterQueue 1.1.0, built on the nfqueue Rust crates.
"""

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


class NetfilterQueue(_NativeQueue):
    # The stable ABI of Python 3.8 lets a native class declare no weak
    # references; this subclass adds them, and nothing else.
    __doc__ = _NativeQueue.__doc__
    __slots__ = ("__weakref__",)


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
