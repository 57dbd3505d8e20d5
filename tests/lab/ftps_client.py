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
import os
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(__file__))
from ftpclient import DataModes, abort_mid_retr  # noqa: E402


class LabFTPS(DataModes, ftplib.FTP_TLS):
    def getresp(self):
        resp = super().getresp()
        print("REPLY", resp, flush=True)
        return resp


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
    abort_mid_retr(ftp, urgent=False)
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
