"""Scripted TCP peers for kspan's capture tests.

Every byte both sides send is fixed here, so a test can check exactly what
kspan captured. Modes:
  server PORT          accept one connection, answer the client script
  client PORT          the client script (after an optional "early" round)
  client-pre PORT      connect and do the early round, print "connected",
                       then wait for a line on stdin before the main script
  files PORT           file and pipe I/O, then one socket write (control)
"""
import os
import socket
import sys
import tempfile

HELLO = b"hello-1"
REPLY = b"reply-1"
BIG = bytes(i % 251 for i in range(10000))
VEC = [b"abc", b"defg", b"hij"]
BYE = [b"by", b"e"]
EARLY = b"early-ping"
EARLY_REPLY = b"early-pong"


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def server(port, early):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    conn, _ = listener.accept()
    if early:
        assert recv_exact(conn, len(EARLY)) == EARLY
        conn.sendall(EARLY_REPLY)
    assert recv_exact(conn, len(HELLO)) == HELLO
    conn.sendall(REPLY)
    assert recv_exact(conn, len(BIG) + sum(map(len, VEC))) == BIG + b"".join(VEC)
    conn.sendmsg(BYE)
    conn.recv(1)  # until the client closes
    conn.close()


def client(port, pre):
    sock = socket.create_connection(("127.0.0.1", port))
    if pre:
        sock.sendall(EARLY)
        assert recv_exact(sock, len(EARLY_REPLY)) == EARLY_REPLY
        print("connected", flush=True)
        sys.stdin.readline()
    sock.sendall(HELLO)
    # A peek leaves the bytes queued: kspan must capture them once, when
    # they are really read.
    assert sock.recv(len(REPLY), socket.MSG_PEEK | socket.MSG_WAITALL) == REPLY
    assert recv_exact(sock, len(REPLY)) == REPLY
    sock.sendall(BIG)
    os.writev(sock.fileno(), VEC)
    assert recv_exact(sock, 3) == b"".join(BYE)
    sock.close()
    print("done", flush=True)


def files(port):
    print("ready", flush=True)
    sys.stdin.readline()
    with tempfile.TemporaryFile() as f:
        f.write(b"FILE-BYTES-" * 100)
        f.flush()
        f.seek(0)
        f.read()
    r, w = os.pipe()
    os.write(w, b"PIPE-BYTES")
    os.read(r, 100)
    os.writev(w, [b"PIPE", b"-V"])
    os.read(r, 100)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"SOCKET-BYTES")
    sock.close()
    print("done", flush=True)


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode in ("server", "server-pre"):
        server(port, mode == "server-pre")
    elif mode in ("client", "client-pre"):
        client(port, mode == "client-pre")
    elif mode == "files":
        files(port)
    else:
        raise SystemExit(f"unknown mode {mode}")
