#!/usr/bin/env python3
"""Multi-step client scenarios for the lab that single-shot clients cannot express."""
import ftplib
import hashlib
import socket
import sys
import threading

sys.path.insert(0, __import__("os").path.dirname(__file__))
from ftpclient import LabFTP, abort_mid_retr  # noqa: E402


def connect(host, mode, user="anonymous", password="lab@", port=21):
    ftp = LabFTP(timeout=60)
    ftp.mode = mode
    ftp.set_pasv(mode in ("pasv", "epsv"))
    ftp.connect(host, port)
    ftp.login(user, password)
    return ftp


def sha_of_retr(ftp, name):
    h = hashlib.sha256()
    ftp.retrbinary("RETR " + name, h.update, blocksize=65536)
    return h.hexdigest()


def concurrent(host, n, name, want):
    """n sessions at once, modes rotating, each retrieving `name`; all must match `want`."""
    modes = ["pasv", "epsv", "port", "eprt"]
    results = [None] * n
    barrier = threading.Barrier(n, timeout=120)

    def one(i):
        try:
            ftp = connect(host, modes[i % 4])
            barrier.wait()  # every session is logged in before any transfer starts
            results[i] = sha_of_retr(ftp, name)
            ftp.quit()
        except Exception as e:  # reported below, per session
            results[i] = "error: %r" % (e,)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    ok = sum(1 for r in results if r == want)
    for i, r in enumerate(results):
        if r != want:
            print("session %d (%s): %s" % (i, modes[i % 4], r))
    print("CONCURRENT %d/%d intact" % (ok, n))
    return 0 if ok == n else 1


def abort_then_more(host, mode, small_sha):
    """ABOR in the middle of a RETR, then the session must go on with more transfers."""
    ftp = connect(host, mode)
    try:
        abort_mid_retr(ftp, urgent=True)
    except ftplib.error_proto as e:
        print("ERROR", e)
        return 1
    ftp.voidcmd("NOOP")
    for i in range(3):
        s = sha_of_retr(ftp, "small.bin")
        if s != small_sha:
            print("transfer %d after abort: checksum %s" % (i, s))
            return 1
    names = [n for n in ftp.nlst("dir") if n.rsplit("/", 1)[-1].startswith("entry")]
    print("AFTER-ABORT 3 transfers intact, NLST %d entries" % len(names))
    ftp.quit()
    return 0 if len(names) == 1000 else 1


def raw(host, port):
    """Connects and prints the first line the gateway sends."""
    s = socket.create_connection((host, port), timeout=20)
    data = b""
    while b"\n" not in data:
        chunk = s.recv(512)
        if not chunk:
            break
        data += chunk
    print("FIRST", data.decode("latin-1").strip())
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "concurrent":
        return concurrent(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    if cmd == "abort":
        return abort_then_more(sys.argv[2], sys.argv[3], sys.argv[4])
    if cmd == "raw":
        return raw(sys.argv[2], int(sys.argv[3]))
    print("unknown scenario", cmd)
    return 2


if __name__ == "__main__":
    sys.exit(main())
