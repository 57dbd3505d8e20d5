#!/usr/bin/env python3
"""A misbehaving FTP server for attack tests, bound to one lab address.

Behaviours (--behaviour):
  pasv-elsewhere   227 names 203.0.113.250 (a host that is not the server); data is served on the
                   server's own address at that port
  pasv-privileged  227 names the server's own address, port 22
  unsolicited-227  NOOP is answered with a 227 naming a port the server listens on
  no-greeting      accepts and never says anything
  endless          any command after login gets an endless multi-line reply
  no-eol           NOOP gets a reply line that never ends
  mismatch         NOOP gets "211-" followed by a "212 " line, then silence
  no-epsv          EPSV is refused with 500 (as by servers that predate RFC 2428); PASV works
  silent           greets, then reads commands and never answers one; prints
                   "silent session N: K commands" whenever K changed (at most 4 times a second)
                   and "silent session N: K commands, closed" when the peer closes
"""
import argparse
import itertools
import socket
import sys
import threading
import time

PAYLOAD = b"hostile-server-data\n" * 5000
SAY = threading.Lock()


def say(line):
    """One whole line to stdout: the sessions' threads print side by side."""
    with SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def data_listener(addr):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, 0))
    ls.listen(4)
    return ls


def session(conn, addr, behaviour, ident):
    f = conn.makefile("rb")
    out = conn.sendall
    if behaviour == "no-greeting":
        f.read()  # until the peer closes
        return
    out(b"220 hostile lab server\r\n")
    if behaviour == "silent":
        silent(f, ident)
        return
    data = None
    logged_in = False
    for raw in f:
        cmd = raw.decode("latin-1").strip()
        verb = cmd.split(" ", 1)[0].upper()
        if verb == "USER":
            out(b"331 password please\r\n")
        elif verb == "PASS":
            logged_in = True
            out(b"230 logged in\r\n")
        elif verb == "QUIT":
            out(b"221 bye\r\n")
            return
        elif logged_in and behaviour == "endless":
            out(b"211-here it comes\r\n")
            try:
                while True:
                    out(b"211-and more\r\n" * 100)
            except OSError:
                return
        elif verb == "EPSV" and behaviour == "no-epsv":
            out(b"500 EPSV not understood\r\n")
        elif verb == "PASV":
            data = data_listener(addr)
            port = data.getsockname()[1]
            host = "203,0,113,250" if behaviour == "pasv-elsewhere" else addr.replace(".", ",")
            if behaviour == "pasv-privileged":
                port = 22
            out(("227 Entering Passive Mode (%s,%d,%d)\r\n" % (host, port >> 8, port & 255)).encode())
        elif verb == "RETR" and data is not None:
            out(b"150 here it comes\r\n")
            d, _ = data.accept()
            d.sendall(PAYLOAD)
            d.close()
            out(b"226 done\r\n")
        elif verb == "NOOP" and behaviour == "unsolicited-227":
            data = data_listener(addr)
            port = data.getsockname()[1]
            out(("227 Entering Passive Mode (%s,%d,%d)\r\n" % (addr.replace(".", ","), port >> 8, port & 255)).encode())
        elif verb == "NOOP" and behaviour == "no-eol":
            out(b"200 " + b"A" * 100000)
        elif verb == "NOOP" and behaviour == "mismatch":
            out(b"211-start\r\n212 not the end\r\n")
        else:
            out(b"200 ok\r\n")


def silent(f, ident):
    """Counts command lines and answers none; the count is printed as it changes."""
    state = {"count": 0, "open": True}

    def report():
        shown = -1
        while state["open"]:
            if state["count"] != shown:
                shown = state["count"]
                say("silent session %d: %d commands" % (ident, shown))
            time.sleep(0.25)

    threading.Thread(target=report, daemon=True).start()
    try:
        for _ in f:
            state["count"] += 1
    except OSError:  # a reset is a close too
        pass
    state["open"] = False
    say("silent session %d: %d commands, closed" % (ident, state["count"]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--behaviour", required=True)
    a = p.parse_args()
    fam = socket.AF_INET6 if ":" in a.addr else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, 21))
    ls.listen(64)
    # Sessions are numbered in accept order.
    for ident in itertools.count():
        conn, _ = ls.accept()
        threading.Thread(target=session, args=(conn, a.addr, a.behaviour, ident), daemon=True).start()


if __name__ == "__main__":
    main()
