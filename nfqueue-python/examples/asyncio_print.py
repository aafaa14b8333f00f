"""Prints and accepts every packet of queue 1 from an asyncio event loop.

    iptables -I FORWARD -j NFQUEUE --queue-num 1
    python3 asyncio_print.py     # Ctrl-C to stop
"""

import asyncio

from netfilterqueue import NetfilterQueue, Packet


def print_and_accept(pkt: Packet) -> None:
    print(pkt, flush=True)
    pkt.accept()


async def main() -> None:
    nfqueue = NetfilterQueue()
    nfqueue.bind(1, print_and_accept)
    loop = asyncio.get_running_loop()
    # Whenever the socket is readable: handle what waits, without blocking.
    loop.add_reader(nfqueue.get_fd(), nfqueue.run, False)
    try:
        await asyncio.Event().wait()  # until cancelled, e.g. by Ctrl-C
    finally:
        loop.remove_reader(nfqueue.get_fd())
        nfqueue.unbind()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
