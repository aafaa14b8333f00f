"""The two examples of the README of NetfilterQueue 1.1.0, the reference this
module is a drop-in for, verbatim, so that the tests run them from any clone.
test_examples.py checks them against that README where the test venv has the
reference package (its metadata holds the README).

From python-netfilterqueue 1.1.0: Copyright (c) 2011, Kerkhoff Technologies,
Inc, and contributors. MIT licensed.
"""

RUN = """\
from netfilterqueue import NetfilterQueue

def print_and_accept(pkt):
    print(pkt)
    pkt.accept()

nfqueue = NetfilterQueue()
nfqueue.bind(1, print_and_accept)
try:
    nfqueue.run()
except KeyboardInterrupt:
    print('')

nfqueue.unbind()
"""

RUN_SOCKET = """\
from netfilterqueue import NetfilterQueue
import socket

def print_and_accept(pkt):
    print(pkt)
    pkt.accept()

nfqueue = NetfilterQueue()
nfqueue.bind(1, print_and_accept)
s = socket.fromfd(nfqueue.get_fd(), socket.AF_UNIX, socket.SOCK_STREAM)
try:
    nfqueue.run_socket(s)
except KeyboardInterrupt:
    print('')

s.close()
nfqueue.unbind()
"""

EXAMPLES = [RUN, RUN_SOCKET]
