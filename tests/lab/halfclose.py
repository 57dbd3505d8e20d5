#!/usr/bin/env python3
"""A download whose data connection the client half-closes at once (shutdown(SHUT_WR) right
after connecting, which is legal TCP: a download's receiver has nothing to send).

  halfclose.py HOST PORT whole FILE SHA   every byte of FILE (SHA-256) and then 226
  halfclose.py HOST PORT cut FILE N       after N bytes the client resets its data connection;
                                          the final reply must be negative, the session usable

Prints OK when everything held, otherwise one FAIL line saying what did not.
"""
import hashlib
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attack import Conn, expect, passive  # noqa: E402


def login(c):
    expect(c, "220")
    c.send(b"USER anonymous\r\n")
    if not expect(c, "").startswith("230"):
        c.send(b"PASS lab@\r\n")
        expect(c, "230")
    c.send(b"TYPE I\r\n")
    expect(c, "200")


def download(c, name, stop_after=None):
    """RETR through a half-closed data connection; returns (bytes read, SHA-256, data socket)."""
    d = socket.create_connection((c.host, passive(c, "pasv")), timeout=30)
    d.shutdown(socket.SHUT_WR)
    print("data connection half-closed")
    c.send(("RETR %s\r\n" % name).encode())
    expect(c, "150")
    h = hashlib.sha256()
    n = 0
    while stop_after is None or n < stop_after:
        chunk = d.recv(65536)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    print("read %d bytes" % n)
    return n, h.hexdigest(), d


def main():
    host, port, kind, name, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    c = Conn(host, port)
    try:
        login(c)
        if kind == "whole":
            n, sha, d = download(c, name)
            d.close()
            expect(c, "226")
            if sha != arg:
                raise AssertionError("got %d bytes with SHA-256 %s, want %s" % (n, sha, arg))
        elif kind == "cut":
            n, _, d = download(c, name, int(arg))
            if n < int(arg):
                raise AssertionError("the data ended after %d bytes, before the client cut it" % n)
            # Linger 0: close with a reset, an aborted download.
            d.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            d.close()
            r = c.reply()
            print("<-", r)
            if not r[:1] in ("4", "5"):
                raise AssertionError("an aborted download was answered %r" % r)
            c.send(b"NOOP\r\n")
            expect(c, "200")
        else:
            raise AssertionError("unknown kind " + kind)
        c.send(b"QUIT\r\n")
        expect(c, "221")
    except Exception as e:  # one line saying what failed
        print("FAIL: %r" % e)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
