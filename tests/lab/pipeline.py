#!/usr/bin/env python3
"""A client that pipelines NOOPs without reading their replies, with a prober beside it.

  pipeline.py HOST PORT --bytes N --window S [--pace-ms MS] [--probe-ms MS]

Connects and reads the 220 greeting. Then a writer sends N bytes of `NOOP\\r\\n` (whole commands),
as fast as the socket takes them or one command every --pace-ms, while the main thread reads
whatever comes back on that connection. Beside them a prober opens a further session every
--probe-ms (100 by default) and times its 220 greeting. Everything ends when the gateway closes
the pipelining connection, or S seconds after the first command. Prints one JSON object:

  sent          bytes the writer got into its socket
  replies       [[seconds since the first command, line], ...] on the pipelining connection
  closed_at     seconds since the first command when that connection closed, or null
  greetings_ms  greeting latency of each probe that got one
  probe_errors  what went wrong with the others
"""
import argparse
import json
import socket
import threading
import time

NOOP = b"NOOP\r\n"
# Every blocking call wakes up this often to look at the clock and the stop flag.
TICK = 0.2


def first_line(sock, limit):
    buf = b""
    deadline = time.monotonic() + limit
    while b"\n" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError("no complete line within %.1f s" % limit)
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("closed before a line")
        buf += chunk
    return buf.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")


def writer(sock, total, pace, stop, state):
    """Sends `total` bytes of NOOPs; stops on `stop`, on an error or when done."""
    stream = memoryview(NOOP * (total // len(NOOP)))
    while state["sent"] < len(stream) and not stop.is_set():
        end = state["sent"] + (len(NOOP) if pace else 65536)
        try:
            state["sent"] += sock.send(stream[state["sent"] : end])
        except socket.timeout:
            continue
        except OSError as e:
            state["send_error"] = repr(e)
            return
        if pace:
            stop.wait(pace)


def prober(host, port, every, stop, out):
    while not stop.is_set():
        started = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=2) as p:
                line = first_line(p, 2)
                if line.startswith("220"):
                    out["greetings_ms"].append(round((time.monotonic() - started) * 1000, 1))
                else:
                    out["probe_errors"].append("greeting %r" % line[:80])
        except (OSError, EOFError, TimeoutError) as e:
            out["probe_errors"].append(repr(e))
        stop.wait(max(0.0, every - (time.monotonic() - started)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--window", type=float, required=True)
    p.add_argument("--pace-ms", type=float, default=0)
    p.add_argument("--probe-ms", type=float, default=100)
    a = p.parse_args()

    sock = socket.create_connection((a.host, a.port), timeout=10)
    greeting = first_line(sock, 10)
    sock.settimeout(TICK)
    out = {"greeting": greeting, "replies": [], "closed_at": None, "greetings_ms": [], "probe_errors": []}
    state = {"sent": 0, "send_error": None}
    stop = threading.Event()
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=writer, args=(sock, a.bytes, a.pace_ms / 1000, stop, state)),
        threading.Thread(target=prober, args=(a.host, a.port, a.probe_ms / 1000, stop, out)),
    ]
    for t in threads:
        t.start()
    buf = b""
    while time.monotonic() - t0 < a.window:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:  # a reset after the gateway's last words is a close too
            chunk = b""
        now = round(time.monotonic() - t0, 3)
        if not chunk:
            out["closed_at"] = now
            break
        buf += chunk
        while b"\n" in buf and len(out["replies"]) < 50:
            line, buf = buf.split(b"\n", 1)
            out["replies"].append([now, line.rstrip(b"\r").decode("latin-1")[:200]])
        if len(out["replies"]) >= 50:
            buf = b""
    stop.set()
    for t in threads:
        t.join(10)
    sock.close()
    out["sent"] = state["sent"]
    out["send_error"] = state["send_error"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
