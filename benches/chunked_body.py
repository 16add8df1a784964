#!/usr/bin/env python3
"""Sends one envelope whose body arrives as N one-byte chunks
(Transfer-Encoding: chunked) to a running relay, and prints the answer, the
time it took and the relay's resident memory before and after (VmRSS and
its peak, VmHWM, from /proc).

    python3 benches/chunked_body.py PORT N RELAY_PID [PROJECT KEY]

The relay must accept PROJECT (default 42) with KEY; its body_read_timeout
must outlast the upload (N one-byte chunks take a few seconds per million).
"""
import socket
import sys
import time

port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
project = sys.argv[4] if len(sys.argv) > 4 else "42"
key = sys.argv[5] if len(sys.argv) > 5 else "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def memory():
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return f"VmRSS {status['VmRSS'].strip()}, VmHWM {status['VmHWM'].strip()}"


body = b'{}\n{"type":"attachment"}\n'
body += b"A" * (n - len(body))
chunks = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
request = (
    f"POST /api/{project}/envelope/ HTTP/1.1\r\nHost: relay\r\n"
    f"X-Sentry-Auth: Sentry sentry_key={key}\r\n"
    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
).encode() + chunks + b"0\r\n\r\n"

print("before:", memory())
started = time.time()
with socket.create_connection(("127.0.0.1", port)) as s:
    s.sendall(request)
    answer = s.recv(200).split(b"\r\n")[0].decode()
print(f"answer: {answer} after {time.time() - started:.2f} s")
print("after: ", memory())
