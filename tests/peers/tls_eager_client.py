"""An HTTPS client that sends its request in the same TCP write as the
handshake's last message (TLS 1.3 allows it; wrk and browsers often do it),
so the server's handshake call reads the request too and its first SSL_read
finds it already decrypted, with no socket I/O of its own.
Usage: tls_eager_client.py PORT PATH CA_FILE; prints the status line."""
import socket
import ssl
import sys

port, path, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
sock = socket.create_connection(("127.0.0.1", port), timeout=10)


def pump_in():
    data = sock.recv(65536)
    if not data:
        raise SystemExit("connection closed during the handshake")
    incoming.write(data)


while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        if outgoing.pending:
            sock.sendall(outgoing.read())
        pump_in()
# The client's Finished is still in `outgoing`: the request joins it.
tls.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
sock.sendall(outgoing.read())
response = b""
while b"\r\n" not in response:
    try:
        response += tls.read(65536)
    except ssl.SSLWantReadError:
        pump_in()
print(response.split(b"\r\n", 1)[0].decode())
