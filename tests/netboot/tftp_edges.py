#!/usr/bin/env python3
"""TFTP edge cases against `metal6 serve`, as a raw client (crates/cli/tests/tftp.rs).

  tftp_edges.py SERVER FILE SIZE

Prints one JSON object:
  retransmit   seconds until block 1 came again when it was not acknowledged
  duplicate    transfer ports that answered one RRQ sent twice from one port (want 1)
  dup_ack      packets received in 1 s after a duplicate ACK in lock-step (want 0)
  after_error  packets received in 4 s after the client sent ERROR (want 0)
"""
import json
import socket
import struct
import sys
import time

server, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])


def rrq(opts=()):
    p = struct.pack("!H", 1) + name.encode() + b"\0octet\0"
    for k, v in opts:
        p += k.encode() + b"\0" + v.encode() + b"\0"
    return p


def sock(timeout):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    return s


def recv_all(s, seconds):
    got, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            got.append(s.recvfrom(2048))
        except socket.timeout:
            break
    return got


out = {}
# Not acknowledged: block 1 again after the retransmission timeout.
s = sock(10)
s.sendto(rrq(), (server, 69))
d1, tid = s.recvfrom(2048)
assert d1[:4] == b"\0\3\0\1", d1[:4]
t = time.monotonic()
d2, tid2 = s.recvfrom(2048)
out["retransmit"] = round(time.monotonic() - t, 2)
assert d2 == d1 and tid2 == tid
s.sendto(struct.pack("!HH", 5, 0) + b"bye\0", tid)
s.close()

# One RRQ sent twice (the client thought the first was lost): one transfer answers.
s = sock(5)
s.sendto(rrq(), (server, 69))
s.sendto(rrq(), (server, 69))
ports = {addr for _, addr in recv_all(s, 0.5)}
out["duplicate"] = len(ports)
for a in ports:
    s.sendto(struct.pack("!HH", 5, 0) + b"bye\0", a)
s.close()

# Lock-step: a duplicate ACK must not make the server send block 2 again.
s = sock(5)
s.sendto(rrq(), (server, 69))
_, tid = s.recvfrom(2048)
s.sendto(struct.pack("!HH", 4, 1), tid)
d2, _ = s.recvfrom(2048)
assert d2[:4] == b"\0\3\0\2", d2[:4]
s.sendto(struct.pack("!HH", 4, 1), tid)
out["dup_ack"] = len(recv_all(s, 1.0))
# ERROR from the client ends the transfer: nothing more, not even a retransmission.
s.sendto(struct.pack("!HH", 5, 0) + b"stop\0", tid)
out["after_error"] = len(recv_all(s, 4.0))
s.close()
print(json.dumps(out))
