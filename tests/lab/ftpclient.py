#!/usr/bin/env python3
"""Python ftplib client for the lab: one operation in a chosen data mode.

The mode is forced whatever the address family (ftplib itself picks PASV/PORT on IPv4 and
EPSV/EPRT on IPv6), and each data-setup command sent is printed as `MODE <verb>` so the test can
check the mode really used.
"""
import argparse
import ftplib
import ipaddress
import socket
import sys


class PeerTap:
    """The active-mode listening socket, printing who connected (`DATA-PEER ip port`).

    With `control_peer` set it refuses, as several real clients do, a data connection that does
    not come from the control connection's peer."""

    def __init__(self, sock, control_peer=None):
        self.sock = sock
        self.control_peer = control_peer

    def accept(self):
        conn, addr = self.sock.accept()
        print("DATA-PEER", addr[0], addr[1], flush=True)
        if self.control_peer is not None and ipaddress.ip_address(addr[0]) != self.control_peer:
            conn.close()
            raise ftplib.Error(
                "data connection did not originate from the same IP address as control (%s, control peer %s)"
                % (addr[0], self.control_peer)
            )
        return conn, addr

    def __getattr__(self, name):
        return getattr(self.sock, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


class DataModes:
    """The data mode forced (`mode`: pasv, epsv, port, eprt) whatever the address family, each
    data-setup command printed; mixed into ftplib.FTP here and into FTP_TLS by ftps_client.py."""

    mode = "pasv"
    use_227_host = False
    same_peer = False

    def putcmd(self, line):
        verb = line.split(" ", 1)[0].upper()
        if verb in ("PASV", "EPSV", "PORT", "EPRT", "MLSD"):
            print("MODE", verb, flush=True)
        return super().putcmd(line)

    def makepasv(self):
        if self.mode == "pasv":
            host, port = ftplib.parse227(self.sendcmd("PASV"))
            print("PASV-HOST", host, flush=True)
            if self.use_227_host:
                return host, port
            # Like curl: the 227 host is not trusted, the control peer is dialled.
            return self.sock.getpeername()[0], port
        host, port = ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        return host, port

    def makeport(self):
        sock = socket.create_server(("", 0), family=self.af, backlog=1)
        port = sock.getsockname()[1]
        host = self.sock.getsockname()[0]
        if self.mode == "port":
            self.sendport(host, port)
        else:
            self.sendeprt(host, port)
        if self.timeout is not ftplib._GLOBAL_DEFAULT_TIMEOUT:
            sock.settimeout(self.timeout)
        peer = ipaddress.ip_address(self.sock.getpeername()[0]) if self.same_peer else None
        return PeerTap(sock, peer)


class LabFTP(DataModes, ftplib.FTP):
    pass


def abort_mid_retr(ftp, urgent):
    """Starts `RETR large.bin`, reads 1 MiB (`READ n`), sends ABOR (as urgent data when `urgent`,
    as ftplib's abort() does; inside TLS there is none) and NOOP as a marker. Returns the replies
    up to NOOP's, which belong to the aborted RETR and to ABOR (their number and wording vary by
    server), or raises ftplib.error_proto when NOOP or ABOR goes unanswered. Bounded: at most
    eight replies are read, each under the session's timeout."""
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR large.bin")
    got = 0
    while got < (1 << 20):
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    print("READ", got, flush=True)
    ftp.sock.sendall(b"ABOR\r\n", socket.MSG_OOB if urgent else 0)
    ftp.putcmd("NOOP")
    replies = []
    while len(replies) < 8:
        replies.append(ftp.getmultiline())
        print("REPLY", replies[-1], flush=True)
        if replies[-1].startswith("200"):
            break
    conn.close()
    if not replies[-1].startswith("200"):
        raise ftplib.error_proto("no NOOP reply after ABOR: %r" % replies)
    if not any(r[:3] in ("225", "226", "426", "451") for r in replies):
        raise ftplib.error_proto("ABOR not answered: %r" % replies)
    print("ABORTED", " | ".join(r.splitlines()[-1] for r in replies), flush=True)
    return replies


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=21)
    p.add_argument("--mode", choices=["pasv", "epsv", "port", "eprt"], required=True)
    p.add_argument("--op", choices=["retr", "stor", "list", "mlsd"], required=True)
    p.add_argument("--remote", required=True)
    p.add_argument("--local", required=True)
    p.add_argument("--user", default="anonymous")
    p.add_argument("--password", default="lab@")
    p.add_argument("--epsv-all", action="store_true", help="send EPSV ALL first; PASV and PORT must then be refused")
    p.add_argument("--use-227-host", action="store_true", help="dial the address the 227 names")
    p.add_argument(
        "--same-peer",
        action="store_true",
        help="refuse an active data connection that does not come from the control connection's peer",
    )
    a = p.parse_args()

    ftp = LabFTP(timeout=60)
    ftp.mode = a.mode
    ftp.set_pasv(a.mode in ("pasv", "epsv"))
    ftp.connect(a.host, a.port)
    ftp.login(a.user, a.password)
    ftp.use_227_host = a.use_227_host
    ftp.same_peer = a.same_peer
    if a.epsv_all:
        print("EPSV-ALL", ftp.sendcmd("EPSV ALL"), flush=True)
        for refused in ("PASV", "PORT 1,2,3,4,5,6"):
            try:
                ftp.sendcmd(refused)
                print("EPSV-ALL-BROKEN", refused, flush=True)
            except ftplib.error_perm as e:
                print("EPSV-ALL-REFUSED", refused.split()[0], str(e)[:3], flush=True)
    if a.op == "retr":
        with open(a.local, "wb") as f:
            ftp.retrbinary("RETR " + a.remote, f.write, blocksize=65536)
    elif a.op == "stor":
        with open(a.local, "rb") as f:
            ftp.storbinary("STOR " + a.remote, f, blocksize=65536)
    elif a.op == "list":
        lines = []
        ftp.retrlines("LIST " + a.remote, lines.append)
        with open(a.local, "w") as f:
            f.write("\n".join(lines) + "\n")
    else:
        with open(a.local, "w") as f:
            for name, facts in ftp.mlsd(a.remote):
                f.write("type=%s;%s\n" % (facts.get("type", "?"), name))
    ftp.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
