#!/usr/bin/env python3
"""Hostile traffic against `metal6 serve`, for crates/cli/tests/hostile.rs.

Run inside a test's own network namespace; it sends only to the server address it is given
(an address in the test's namespaces). Every loop is bounded by --seconds.

  flood.py dhcp  SERVER --seconds N --mac MAC   malformed and abusive DHCPv6
  flood.py tftp  SERVER --seconds N             RRQs never acknowledged, garbage
  flood.py http  SERVER --seconds N --port P    held connections, hostile Range headers

Prints one JSON line with what it sent.
"""
import argparse
import json
import os
import random
import socket
import struct
import time


def opt(code, body):
    return struct.pack("!HH", code, len(body)) + body


def duid_ll(mac):
    return struct.pack("!HH", 3, 1) + mac


def duid_llt(mac, t):
    return struct.pack("!HHI", 1, 1, t) + mac


def nested_ia_ta(limit=65000):
    """A Solicit whose IA_TA nests IA_TAs as deep as a 64 KB datagram allows."""
    ia = b""
    while len(ia) + 8 <= limit:
        ia = opt(4, struct.pack("!I", 1) + ia)
    return bytes([1, 0, 0, 1]) + opt(1, duid_ll(b"\x52\x54\x00\x12\x34\x56")) + ia


def many_ia_na(mac, n, t):
    """A Rapid-Commit Solicit for a known node with n IA_NAs (a fresh DUID-LLT each time)."""
    body = opt(1, duid_llt(mac, t)) + opt(14, b"")
    for _ in range(n):
        body += opt(3, struct.pack("!III", random.getrandbits(32), 0, 0))
    return bytes([1]) + os.urandom(3) + body


def garbage():
    kind = random.randrange(4)
    if kind == 0:
        return os.urandom(random.randrange(1, 1400))
    if kind == 1:  # option lengths that overrun
        return bytes([1, 1, 2, 3]) + struct.pack("!HH", 1, 60000) + os.urandom(20)
    if kind == 2:  # relay nested as deep as it goes
        m = bytes([1, 0, 0, 1]) + opt(1, duid_ll(os.urandom(6)))
        while len(m) < 60000:
            m = bytes([12, 0]) + bytes(32) + opt(9, m)
        return m
    # unknown clients, each with a new DUID
    return bytes([1]) + os.urandom(3) + opt(1, duid_ll(os.urandom(6))) + opt(3, os.urandom(12))


def dhcp(a):
    mac = bytes(int(x, 16) for x in a.mac.split(":"))
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    dest = (a.server, 547)
    sent = {"nested": 0, "many-ia": 0, "garbage": 0, "same-client": 0}
    end = time.monotonic() + a.seconds
    t = 0
    big = nested_ia_ta()
    # One client asking again and again, far faster than its rate limit allows.
    same = bytes([1, 0, 0, 2]) + opt(1, duid_ll(mac)) + opt(3, struct.pack("!III", 1, 0, 0))
    while time.monotonic() < end:
        for kind, payload in (("nested", big), ("many-ia", many_ia_na(mac, 1000, t)), ("garbage", garbage()),
                              ("same-client", same)):
            try:
                s.sendto(payload, dest)
                sent[kind] += 1
            except OSError:
                pass
        t += 1
    return sent


def tftp(a):
    sent = {"rrq": 0, "garbage": 0}
    socks = []
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            s.sendto(b"\x00\x01installer.efi\x00octet\x00timeout\x00255\x00", (a.server, 69))
            s.sendto(os.urandom(random.randrange(1, 600)), (a.server, 69))
            sent["rrq"] += 1
            sent["garbage"] += 1
        except OSError:
            pass
        # Keep the sockets open (never acknowledging), up to a bound of our own descriptors.
        socks.append(s)
        if len(socks) > 400:
            socks.pop(0).close()
        time.sleep(0.002)
    return sent


def http(a):
    sent = {"held": 0, "refused": 0, "bad-range": 0}
    held = []
    end = time.monotonic() + a.seconds
    ranges = ["bytes=5-x", "bytes=0-99999999999999999999999", "bytes=-0", "bytes=18446744073709551615-"]
    while time.monotonic() < end:
        try:
            c = socket.create_connection((a.server, a.port), timeout=2)
        except OSError:
            sent["refused"] += 1
            time.sleep(0.01)
            continue
        r = random.choice(ranges)
        try:
            if len(held) < 200:
                # Half a request head, never finished: holds a slot until the head timeout.
                c.sendall(b"GET /boot/installer.efi HTTP/1.1\r\nHost: x\r\n")
                held.append(c)
                sent["held"] += 1
            else:
                c.sendall(f"GET /boot/installer.efi HTTP/1.1\r\nHost: x\r\nRange: {r}\r\nConnection: close\r\n\r\n".encode())
                c.recv(256)
                c.close()
                sent["bad-range"] += 1
        except OSError:
            sent["refused"] += 1
            c.close()
    for c in held:
        c.close()
    return sent


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["dhcp", "tftp", "http"])
    p.add_argument("server")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--mac", default="52:54:00:6d:00:01")
    p.add_argument("--port", type=int, default=8080)
    a = p.parse_args()
    out = {"dhcp": dhcp, "tftp": tftp, "http": http}[a.mode](a)
    print(json.dumps({"mode": a.mode, "sent": out}))


if __name__ == "__main__":
    main()
