"""Benchmark consumer for any module named netfilterqueue: the reference
package (NetfilterQueue 1.1.0) and nfqueue-python run this same script, each
from its own virtualenv. Accepts every packet; on SIGTERM or SIGINT prints its
packet count and exits 0, as the other consumers of `cargo xtask bench` do.

    python3 nfq_python.py [--batch] QUEUE_NUM

--batch (nfqueue-python only) runs run(batch=True): the verdicts of a burst
go out together after its last callback, instead of each within 200 us.
"""

import signal
import sys
from types import FrameType
from typing import Optional

from netfilterqueue import NetfilterQueue, Packet

# The receive buffer every benchmark consumer asks for.
RECV_BUFFER = 8 << 20


def main() -> None:
    queue_num = int(sys.argv[-1])
    batch = "--batch" in sys.argv[1:-1]
    count = 0

    def accept(pkt: Packet) -> None:
        nonlocal count
        count += 1
        pkt.accept()

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    nfq = NetfilterQueue()
    nfq.bind(queue_num, accept, sock_len=RECV_BUFFER)
    print(f"nfq_python: bound queue {queue_num}", file=sys.stderr)
    try:
        if batch:
            nfq.run(batch=True)
        else:
            nfq.run()
    except KeyboardInterrupt:
        pass
    print(count, flush=True)
    nfq.unbind()


if __name__ == "__main__":
    main()
