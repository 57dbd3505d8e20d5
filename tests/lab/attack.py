#!/usr/bin/env python3
"""A raw control-channel client for attack tests: runs a list of steps, stops at the first
failure, prints OK when every step held.

Steps (arguments):
  login[:user:pass]          USER (and PASS when asked), ending in 230
  newconn[:SRCIP]            open a further session (from SRCIP), keeping the others open
  send:TEXT                  send TEXT (Python escapes: \\r \\n \\x00 \\xff ...)
  sendurgent:TEXT            send TEXT with MSG_OOB
  expect:PREFIX              the next reply starts with PREFIX
  expectraw:TEXT             the next bytes on the wire are exactly TEXT
  expectclose:PREFIX         lines until the connection closes; the last starts with PREFIX
  retr:MODE:FILE:SHA         PASV or EPSV, RETR FILE, data SHA-256 must match
  steal:SRCIP:FILE:SHA       PASV; a stranger from SRCIP connects first and must be shut out;
                             then the real transfer must arrive intact
  once:SRCIP:FILE:SHA        PASV; a stranger from SRCIP is shut out, the real transfer
                             arrives intact, then a second connection of the client to the same
                             data port is shut out too (both data paths: relay and kernel)
  starttls:CAFILE[:INJECT]   AUTH TLS (followed in the same write by INJECT, clear text a man
                             in the middle appended), 234, then the TLS handshake verifying the
                             gateway against CAFILE; every later step runs inside TLS
  protp                      PBSZ 0 and PROT P: data connections are TLS from then on
"""
import hashlib
import re
import socket
import ssl
import sys

TIMEOUT = 30


def unescape(s):
    return s.encode("latin-1").decode("unicode_escape").encode("latin-1")


class Conn:
    def __init__(self, host, port):
        self.host = host
        self.s = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = b""
        self.ctx = None
        self.prot_p = False

    def starttls(self, cafile):
        """Switches the control connection to TLS; what was buffered in clear text is dropped."""
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.s = self.ctx.wrap_socket(self.s, server_hostname=self.host)
        self.buf = b""

    def data(self, sock):
        """A data connection, in TLS when PROT P is in force (resuming the control session)."""
        if self.prot_p:
            return self.ctx.wrap_socket(sock, server_hostname=self.host, session=self.s.session)
        return sock

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def line(self):
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("latin-1")

    def reply(self):
        first = self.line()
        lines = [first]
        if len(first) >= 4 and first[3] == "-":
            code = first[:3]
            while True:
                nxt = self.line()
                lines.append(nxt)
                if nxt[:3] == code and nxt[3:4] != "-":
                    break
        return "\n".join(lines)

    def raw(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data, urgent=False):
        if urgent and self.ctx is None:
            self.s.send(data, socket.MSG_OOB)
        else:
            self.s.sendall(data)


def expect(c, prefix):
    r = c.reply()
    print("<-", r.replace("\n", " | ")[:300])
    if not r.startswith(prefix):
        raise AssertionError("expected %r, got %r" % (prefix, r[:200]))
    return r


def passive(c, mode):
    c.send(("PASV\r\n" if mode == "pasv" else "EPSV\r\n").encode())
    r = expect(c, "227" if mode == "pasv" else "229")
    if mode == "pasv":
        n = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", r).groups()
        port = int(n[4]) * 256 + int(n[5])
    else:
        port = int(re.search(r"\(\|\|\|(\d+)\|\)", r).group(1))
    return port


# A dropped SYN shows as a connect timeout: this long is enough on the lab's veths.
SHUT_OUT_WAIT = 3


def shut_out(src, host, port, who):
    """A connection from src (None: the default address) gets no data: refused, dropped (the
    connect times out) or closed without a byte."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    st = socket.socket(fam, socket.SOCK_STREAM)
    st.settimeout(SHUT_OUT_WAIT)
    if src:
        st.bind((src, 0))
    try:
        st.connect((host, port))
    except (ConnectionRefusedError, socket.timeout, TimeoutError) as e:
        print("%s shut out: %s" % (who, type(e).__name__))
        st.close()
        return
    try:
        got = st.recv(1)
    except (ConnectionResetError, socket.timeout, TimeoutError):
        got = b""
    st.close()
    if got != b"":
        raise AssertionError("%s was served data" % who)
    print("%s shut out: closed" % who)


def fetch(c, port, name, want, stranger=None):
    if stranger:
        fam = socket.AF_INET6 if ":" in stranger else socket.AF_INET
        st = socket.socket(fam, socket.SOCK_STREAM)
        st.settimeout(TIMEOUT)
        st.bind((stranger, 0))
        st.connect((c.host, port))
        try:
            got = st.recv(1)
        except ConnectionResetError:
            got = b""
        if got != b"":
            raise AssertionError("stranger was served data")
        print("stranger shut out")
        st.close()
    d = c.data(socket.create_connection((c.host, port), timeout=TIMEOUT))
    c.send(("RETR %s\r\n" % name).encode())
    expect(c, "1")
    h = hashlib.sha256()
    while True:
        chunk = d.recv(65536)
        if not chunk:
            break
        h.update(chunk)
    d.close()
    expect(c, "226")
    if h.hexdigest() != want:
        raise AssertionError("data checksum %s, want %s" % (h.hexdigest(), want))
    print("transfer intact")


def main():
    host, port, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    c = Conn(host, port)
    held = []
    for i, step in enumerate(steps):
        kind, _, arg = step.partition(":")
        try:
            if kind == "login":
                user, _, pw = arg.partition(":")
                c.send(("USER %s\r\n" % (user or "anonymous")).encode())
                # Servers may log anonymous users in without asking for a password.
                if not expect(c, "").startswith("230"):
                    c.send(("PASS %s\r\n" % (pw or "lab@")).encode())
                    expect(c, "230")
            elif kind == "send":
                c.send(unescape(arg))
            elif kind == "sendurgent":
                c.send(unescape(arg), urgent=True)
            elif kind == "expect":
                expect(c, arg)
            elif kind == "expectraw":
                want = unescape(arg)
                got = c.raw(len(want))
                if got != want:
                    raise AssertionError("raw %r, want %r" % (got, want))
            elif kind == "expectclose":
                last = ""
                lines = 0
                try:
                    while True:
                        last = c.line()
                        lines += 1
                except (EOFError, ConnectionResetError):
                    pass
                print("<- %d lines, last %r, then closed" % (lines, last[:200]))
                if not last.startswith(arg):
                    raise AssertionError("closed after %r, want a last line %r" % (last[:200], arg))
            elif kind == "newconn":
                # A further session; the previous one stays open.
                held.append(c)
                c = Conn(host, port)
                if arg:
                    c.s.close()
                    fam = socket.AF_INET6 if ":" in arg else socket.AF_INET
                    s = socket.socket(fam, socket.SOCK_STREAM)
                    s.settimeout(TIMEOUT)
                    s.bind((arg, 0))
                    s.connect((host, port))
                    c.s = s
            elif kind == "starttls":
                cafile, _, inject = arg.partition(":")
                c.send(b"AUTH TLS\r\n" + unescape(inject))
                expect(c, "234")
                c.starttls(cafile)
                print("TLS", c.s.version())
            elif kind == "protp":
                c.send(b"PBSZ 0\r\n")
                expect(c, "200")
                c.send(b"PROT P\r\n")
                expect(c, "200")
                c.prot_p = True
            elif kind == "retr":
                mode, name, sha = arg.split(":")
                fetch(c, passive(c, mode), name, sha)
            elif kind == "once":
                src, name, sha = arg.split(":")
                port = passive(c, "pasv")
                shut_out(src, c.host, port, "stranger")
                fetch(c, port, name, sha)
                shut_out(None, c.host, port, "second connection")
            elif kind == "steal":
                src, name, sha = arg.split(":")
                fetch(c, passive(c, "pasv"), name, sha, stranger=src)
            else:
                raise AssertionError("unknown step " + step)
        except Exception as e:  # one line saying which step failed and why
            print("FAIL step %d (%s): %r" % (i, step[:80], e))
            return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
