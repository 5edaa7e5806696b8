"""A forking HTTP/1.1 server in the inetd style of busybox httpd and
classic Unix daemons: the parent accepts and closes its copy, the child
moves the connection to fds 0 and 1, reads the request on 0 and answers on
1, and exits; the parent reaps exited children at its next accept, as
such servers do, so a child stays a zombie until then.

The parent's close races the child's read. On every other connection the
parent closes only once the child has read the request, so both orders
happen (the child answers only after the parent's close): kspan must see
one connection either way.

    fork_server.py PORT
"""

import os
import socket
import sys

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(16)
served = 0


def child(conn, have_read, parent_closed):
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
    try:
        os.write(have_read, b"r")
    except BrokenPipeError:
        pass  # the parent did not wait for this one
    os.read(parent_closed, 1)
    path = request.split(b" ")[1]
    status, body = (b"200 OK", b"forked\n") if path == b"/forked" else (b"404 Not Found", b"no\n")
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    os.write(1, head)
    os.write(1, body)
    os._exit(0)


while True:
    conn, _ = listener.accept()
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    served += 1
    read_end, write_end = os.pipe()
    closed_r, closed_w = os.pipe()
    if os.fork() == 0:
        os.close(read_end)
        os.close(closed_w)
        child(conn, write_end, closed_r)
    os.close(write_end)
    os.close(closed_r)
    if served % 2 == 1:
        os.read(read_end, 1)  # the child has read the request
    os.close(read_end)
    conn.close()
    os.write(closed_w, b"c")
    os.close(closed_w)
