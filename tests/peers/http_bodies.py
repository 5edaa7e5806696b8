"""Scripted HTTP/1.1 peers whose every message goes out in one write, so a
test knows exactly which syscall carries which bytes: the cases where kspan
may capture a head alone (one message, Content-Length body) and the ones
where it must capture everything (chunked, pipelined, HEAD, long heads).
Some answers are gathered from several buffers (sendmsg), as servers that
keep head and body apart write them; the server saves each of those as
DIR/<case>.bin so a test can compare what was captured byte for byte.
Usage: http_bodies.py server PORT DIR | client PORT"""
import os
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

def gathered(case, parts):
    """An answer written from several buffers: its case names it."""
    parts[0] = parts[0].replace(b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nX-Case: " + case + b"\r\n", 1)
    return parts


def split_at(message, *cuts):
    return [message[a:b] for a, b in zip((0,) + cuts, cuts + (len(message),))]


CHUNKED_PARTS = [body(700, 11), body(500, 12)]
BIG_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked([body(1500, 13), body(1500, 14)])
# path -> the buffers of one sendmsg.
GATHERED = {
    # Head and body apart (nginx): the body need not be copied at all.
    b"/iov": gathered(b"iov", [b"HTTP/1.1 200 OK\r\nContent-Length: 1800\r\n\r\n", body(1800, 9)]),
    # The head split over two buffers: captured whole.
    b"/iov-split": gathered(b"iov-split", [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 1800\r\n\r\n" + body(1800, 10)]),
    # Chunk framing in buffers of its own.
    b"/iov-chunked": gathered(
        b"iov-chunked",
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
        + [piece for part in CHUNKED_PARTS for piece in (b"%x\r\n" % len(part), part, b"\r\n")]
        + [b"0\r\n\r\n"],
    ),
    # A first buffer longer than the head scan reads.
    b"/iov-big": gathered(b"iov-big", split_at(BIG_CHUNKED, 2600)),
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


def server(port, save_dir):
    for path, parts in GATHERED.items():
        with open(os.path.join(save_dir, path[1:].decode() + ".bin"), "wb") as out:
            out.write(b"".join(parts))
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
            elif path in GATHERED:
                parts = GATHERED[path]
                sent = conn.sendmsg(parts)
                assert sent == sum(map(len, parts)), "one sendmsg sends it all on loopback"
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
    for path, parts in GATHERED.items():
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\n" + host + b"\r\n")
        head, got, rest = read_response(sock, b"")
        assert not rest
        assert head + b"\r\n\r\n" + got == b"".join(parts), path
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
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), sys.argv[3])
    else:
        client(int(sys.argv[2]))
