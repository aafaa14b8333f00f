"""A blocking run() on a worker thread, stopped from the main thread; the
verdicts carry a mark that later rules can match (-m mark --mark 0x1).

    iptables -I INPUT -p udp -j NFQUEUE --queue-num 1
    python3 threads.py SECONDS
"""

import sys
import threading

from netfilterqueue import NetfilterQueue, Packet


def mark_and_accept(pkt: Packet) -> None:
    pkt.accept(mark=0x1)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    nfqueue = NetfilterQueue()
    nfqueue.bind(1, mark_and_accept, sock_len=131072)
    worker = threading.Thread(target=nfqueue.run)
    worker.start()
    # run() waits with the GIL released, so this thread keeps running.
    threading.Event().wait(seconds)
    nfqueue.stop()
    worker.join()
    stats = nfqueue.stats()
    print(f"{stats['packets']} packets, {stats['send_calls']} sendmsg calls")
    nfqueue.unbind()


if __name__ == "__main__":
    main()
