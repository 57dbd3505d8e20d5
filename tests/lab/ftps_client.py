#!/usr/bin/env python3
"""Python ftplib FTP_TLS client for the FTPS lab tests: log in over TLS, PROT P, one operation in
a chosen data mode. Prints every reply the server gave to the control commands it sent
(`REPLY <text>`) and `MODE <verb>` for each data-setup command, so tests can check both.
Exit 0 on success; on an FTP error prints `ERROR <reply>` and exits 1.

`--op abor`: starts `RETR large.bin` (PROT P), reads 1 MiB, sends ABOR inside TLS (no urgent
data there, as FTP_TLS.abort does) and NOOP as a marker, then RETRs `--remote` into `--local`:
the session must stay usable.
"""
import argparse
import ftplib
import socket
import ssl
import sys


class LabFTPS(ftplib.FTP_TLS):
    mode = "pasv"

    def putcmd(self, line):
        verb = line.split(" ", 1)[0].upper()
        if verb in ("PASV", "EPSV", "PORT", "EPRT"):
            print("MODE", verb, flush=True)
        return super().putcmd(line)

    def getresp(self):
        resp = super().getresp()
        print("REPLY", resp, flush=True)
        return resp

    def makepasv(self):
        if self.mode == "pasv":
            _, port = ftplib.parse227(self.sendcmd("PASV"))
            return self.sock.getpeername()[0], port
        return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())

    def makeport(self):
        sock = socket.create_server(("", 0), family=self.af, backlog=1)
        port = sock.getsockname()[1]
        host = self.sock.getsockname()[0]
        if self.mode == "port":
            self.sendport(host, port)
        else:
            self.sendeprt(host, port)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        return sock


class ImplicitFTPS(LabFTPS):
    """TLS from the first byte (port 990)."""

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout if timeout != -999 else self.timeout)
        self.af = self.sock.family
        self.sock = self.context.wrap_socket(self.sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def abort_then_more(ftp, remote, local):
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR large.bin")
    got = 0
    while got < (1 << 20):
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    print("READ", got, flush=True)
    # Replies up to NOOP's belong to the aborted RETR and to ABOR; their number and wording
    # vary by server. Bounded: a session that never answers NOOP fails here.
    ftp.sock.sendall(b"ABOR\r\n")
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
    ftp.voidcmd("NOOP")
    with open(local, "wb") as f:
        ftp.retrbinary("RETR " + remote, f.write)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--cafile", required=True)
    p.add_argument("--mode", choices=["pasv", "epsv", "port", "eprt"], default="pasv")
    p.add_argument("--op", choices=["retr", "stor", "list", "login", "abor"], default="retr")
    p.add_argument("--remote", default="")
    p.add_argument("--local", default="")
    p.add_argument("--user", default="anonymous")
    p.add_argument("--password", default="lab@")
    p.add_argument("--implicit", action="store_true")
    a = p.parse_args()
    ctx = ssl.create_default_context(cafile=a.cafile)
    cls = ImplicitFTPS if a.implicit else LabFTPS
    ftp = cls(context=ctx, timeout=60)
    ftp.mode = a.mode
    ftp.set_pasv(a.mode in ("pasv", "epsv"))
    try:
        ftp.connect(a.host, a.port)
        if not a.implicit:
            ftp.auth()
        ftp.login(a.user, a.password)
        ftp.prot_p()
        if a.op == "retr":
            with open(a.local, "wb") as f:
                ftp.retrbinary("RETR " + a.remote, f.write)
        elif a.op == "stor":
            with open(a.local, "rb") as f:
                ftp.storbinary("STOR " + a.remote, f)
        elif a.op == "abor":
            abort_then_more(ftp, a.remote, a.local)
        elif a.op == "list":
            lines = []
            ftp.retrlines("LIST", lines.append)
            for line in lines:
                print("LIST", line, flush=True)
        ftp.quit()
    except ftplib.all_errors as e:
        print("ERROR", e, flush=True)
        sys.exit(1)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
