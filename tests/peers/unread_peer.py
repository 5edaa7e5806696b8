"""A loopback connection holding bytes it has not read yet, for stop tests.

    unread_peer.py SIZE

Connects a client to a server of its own, sends a request through it and
reports whether it arrived with a `traceparent` (`before=1|0`), has the
server send SIZE bytes, waits until the client's kernel reports them all
queued, and prints `queued before=..`. Then it waits for a line on stdin
(the test stops kspan meanwhile), reads the answer with a deadline, sends a
second request, and prints `done received=N intact=1|0 after=1|0`.
"""

import fcntl
import socket
import struct
import sys
import termios
import time

size = int(sys.argv[1])
pattern = bytes((i * 7 + 3) % 251 for i in range(size))

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(1)
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()


def request_carries_traceparent(path):
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: peer\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = server.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(b"traceparent:" in head.lower())


def queued():
    return struct.unpack("i", fcntl.ioctl(client.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


before = request_carries_traceparent("/before")
server.sendall(pattern)
deadline = time.monotonic() + 10
while queued() < size and time.monotonic() < deadline:
    time.sleep(0.01)
print(f"queued before={before} fionread={queued()}", flush=True)

sys.stdin.readline()
client.settimeout(10)
received = b""
try:
    while len(received) < size:
        chunk = client.recv(65536)
        if not chunk:
            break
        received += chunk
except socket.timeout:
    pass
after = request_carries_traceparent("/after") if len(received) == size else 0
print(f"done received={len(received)} intact={int(received == pattern)} after={after}", flush=True)
