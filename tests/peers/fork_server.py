"""A forking HTTP/1.1 server in the inetd style of busybox httpd and
classic Unix daemons: the parent accepts and closes its copy, the child
moves the connection to fds 0 and 1, reads the request on 0 and answers on
1, and exits.

    fork_server.py PORT
"""

import os
import signal
import socket
import sys

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(16)
while True:
    conn, _ = listener.accept()
    if os.fork():
        conn.close()
        continue
    listener.close()
    os.dup2(conn.fileno(), 0)
    os.dup2(0, 1)
    conn.close()
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = os.read(0, 4096)
        if not chunk:
            os._exit(0)
        request += chunk
    path = request.split(b" ")[1]
    status, body = (b"200 OK", b"forked\n") if path == b"/forked" else (b"404 Not Found", b"no\n")
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    os.write(1, head)
    os.write(1, body)
    os._exit(0)
