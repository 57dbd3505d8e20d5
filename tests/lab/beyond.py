#!/usr/bin/env python3
"""Lab scenarios that need more than one control connection.

fxp A B USER PASS NAME STORED   a site-to-site copy: NAME from B (anonymous) to A as STORED
exhaust HOST                    passive and active port ranges of one port each, held and exceeded
"""
import ftplib
import sys


def login(host, user="anonymous", password="lab@"):
    ftp = ftplib.FTP(timeout=30)
    ftp.connect(host, 21)
    ftp.login(user, password)
    ftp.voidcmd("TYPE I")
    return ftp


def fxp(a_host, b_host, user, password, name, stored):
    a = login(a_host, user, password)
    b = login(b_host)
    reply = a.sendcmd("PASV")
    host, port = ftplib.parse227(reply)
    print("A-PASV", host, port, flush=True)
    arg = ",".join(host.split(".") + [str(port >> 8), str(port & 255)])
    print("B-PORT", b.sendcmd("PORT " + arg), flush=True)
    # Both commands go out before any reply is read: a server in passive mode may answer its
    # STOR only once the data connection has arrived.
    a.putcmd("STOR " + stored)
    b.putcmd("RETR " + name)
    print("B-RETR", b.getresp(), flush=True)
    print("A-STOR", a.getresp(), flush=True)
    print("B-DONE", b.voidresp(), flush=True)
    print("A-DONE", a.voidresp(), flush=True)
    a.quit()
    b.quit()
    return 0


def code_of(ftp, line):
    try:
        return ftp.sendcmd(line)[:3]
    except ftplib.Error as e:
        return str(e)[:3]


def exhaust(host):
    one, two = login(host), login(host)
    print("ONE-PASV", code_of(one, "PASV"), flush=True)
    # The only passive port is held by the first session.
    print("TWO-PASV", code_of(two, "PASV"), flush=True)
    local = two.sock.getsockname()[0]
    port = lambda p: "PORT " + ",".join(local.split(".") + [str(p >> 8), str(p & 255)])
    print("TWO-PORT", code_of(two, port(40123)), flush=True)
    # The only active port toward the server is now held by the second session.
    print("ONE-PORT", code_of(one, port(40124)), flush=True)
    print("ONE-NOOP", code_of(one, "NOOP"), flush=True)
    one.quit()
    two.quit()
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "fxp":
        return fxp(*sys.argv[2:8])
    if cmd == "exhaust":
        return exhaust(sys.argv[2])
    print("unknown scenario", cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
