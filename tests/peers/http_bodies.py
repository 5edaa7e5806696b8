"""Scripted HTTP/1.1 peers whose every message goes out in one write, so a
test knows exactly which syscall carries which bytes: the cases where kspan
may capture a head alone (one message, Content-Length body) and the ones
where it must capture everything (chunked, pipelined, HEAD, long heads).
Usage: http_bodies.py server PORT | client PORT"""
import socket
import sys

PAD = b"x" * 600
LONG_PAD = b"y" * 2500


def body(n, seed):
    return bytes(b"abcdefghijklmnopqrstuvwxyz"[(i + seed) % 26] for i in range(n))


def chunked(parts):
    out = b""
    for part in parts:
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


# path -> the whole answer, written at once.
RESPONSES = {
    b"/cl": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2000\r\n\r\n" + body(2000, 1),
    b"/ows": b"HTTP/1.1 200 OK\r\ncontent-length:   1500  \r\nX-After: yes\r\n\r\n" + body(1500, 2),
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked([body(600, 3), body(600, 4)]),
    b"/long-head": b"HTTP/1.1 200 OK\r\nX-Pad: " + LONG_PAD + b"\r\nContent-Length: 1000\r\n\r\n" + body(1000, 5),
    b"/upload": b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
}
# Answered together, in one write, to two requests that came in one write.
PIPELINED = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\n\r\n" + body(600, 6)
    + b"HTTP/1.1 200 OK\r\nContent-Length: 700\r\n\r\n" + body(700, 7)
)
# A response to HEAD: its length is that of the body it does not carry.
HEAD_RESPONSE = b"HTTP/1.1 200 OK\r\nX-Pad: " + PAD + b"\r\nContent-Length: 2000\r\n\r\n"


def heads_and_bodies(buf):
    """Splits complete requests off `buf`: (list of (method, path, body), rest)."""
    out = []
    while b"\r\n\r\n" in buf:
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        method, path, _ = lines[0].split(b" ")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            break
        out.append((method, path, rest[:length]))
        buf = rest[length:]
    return out, buf


def server(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    conn, _ = listener.accept()
    buf = b""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        requests, buf = heads_and_bodies(buf + data)
        paths = [path for _, path, _ in requests]
        if paths == [b"/p1", b"/p2"]:
            conn.sendall(PIPELINED)
            continue
        for method, path, req_body in requests:
            if method == b"HEAD":
                conn.sendall(HEAD_RESPONSE)
            elif path == b"/upload":
                assert req_body == body(3000, 8), "upload body"
                conn.sendall(RESPONSES[path])
            else:
                conn.sendall(RESPONSES[path])


def read_response(sock, buf, head_only=False):
    """One response off the socket: (head, body, rest)."""
    while b"\r\n\r\n" not in buf:
        buf += recv(sock)
    head, rest = buf.split(b"\r\n\r\n", 1)
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if head_only:
        return head, b"", rest
    if fields.get(b"transfer-encoding") == b"chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            rest += recv(sock)
        return head, rest, b""
    length = int(fields[b"content-length"])
    while len(rest) < length:
        rest += recv(sock)
    return head, rest[:length], rest[length:]


def recv(sock):
    data = sock.recv(65536)
    if not data:
        raise SystemExit("server closed early")
    return data


def client(port):
    sock = socket.create_connection(("127.0.0.1", port))
    host = b"Host: 127.0.0.1\r\n"
    for path in (b"/cl", b"/ows", b"/chunked", b"/long-head"):
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\n" + host + b"\r\n")
        _, got, rest = read_response(sock, b"")
        assert not rest
        want = RESPONSES[path].split(b"\r\n\r\n", 1)[1]
        assert got == want, path
    sock.sendall(b"GET /p1 HTTP/1.1\r\n" + host + b"\r\nGET /p2 HTTP/1.1\r\n" + host + b"\r\n")
    _, first, rest = read_response(sock, b"")
    _, second, rest = read_response(sock, rest)
    assert (len(first), len(second), rest) == (600, 700, b"")
    sock.sendall(b"HEAD /cl HTTP/1.1\r\n" + host + b"\r\n")
    read_response(sock, b"", head_only=True)
    upload = body(3000, 8)
    sock.sendall(b"POST /upload HTTP/1.1\r\n" + host + b"Content-Length: 3000\r\n\r\n" + upload)
    _, got, _ = read_response(sock, b"")
    assert got == b"ok"
    sock.close()


if __name__ == "__main__":
    {"server": server, "client": client}[sys.argv[1]](int(sys.argv[2]))
