#!/usr/bin/env python3
"""Lab client for the admin API test: downloads FILE slowly (so that it is still running when
the administrator ends the session) and prints the reply that ends it.

Prints `PROGRESS n` every 8 MiB, then `REPLY <the reply>` when the server side ends the
transfer with an error reply, or `DONE n` if the whole file came. Exits 0 only for a 421.
"""
import ftplib
import sys
import time

host, path = sys.argv[1], sys.argv[2]
ftp = ftplib.FTP(host, timeout=60)
ftp.login()
ftp.voidcmd("TYPE I")
got = 0
step = 8 << 20


def block(data):
    global got
    before = got
    got += len(data)
    if got // step != before // step:
        print("PROGRESS", got, flush=True)
    # About 32 MiB/s at most: a 1 GiB file takes half a minute, time for the test to look.
    time.sleep(len(data) / (32 << 20))


try:
    ftp.retrbinary("RETR " + path, block, blocksize=65536)
    print("DONE", got, flush=True)
    sys.exit(1)
except ftplib.error_temp as e:
    print("REPLY", str(e), flush=True)
    print("GOT", got, flush=True)
    sys.exit(0 if str(e).startswith("421") else 1)
except (EOFError, OSError) as e:
    print("CLOSED", type(e).__name__, e, flush=True)
    sys.exit(1)
