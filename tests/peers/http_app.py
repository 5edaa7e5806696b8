"""A plain-stdlib HTTP/1.1 app with no tracing code: keep-alive, chunked
request and response bodies, a 500, HEAD. Usage: [BIND=addr] http_app.py PORT"""
import json
import socket
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_body(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.startswith("/users/"):
            self.send_body(200, json.dumps({"id": path.rsplit("/", 1)[1]}).encode())
        elif path == "/reset":
            # Abort: SO_LINGER 0 makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif path == "/headers":
            self.send_body(200, json.dumps(dict(self.headers.items())).encode())
        elif path == "/fail":
            self.send_body(500, b'{"error": "boom"}')
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first,", b"second,", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_body(404, b"{}")

    do_HEAD = do_GET

    def do_POST(self):
        body = self.read_body()
        if self.path.startswith("/headers"):
            # Body checksum and headers, so tests can prove bytes arrived intact.
            import hashlib
            answer = dict(self.headers.items())
            answer["x-body-sha256"] = hashlib.sha256(body).hexdigest()
            answer["x-body-len"] = str(len(body))
            self.send_body(200, json.dumps(answer).encode())
            return
        self.send_body(201, body, "application/octet-stream")


if __name__ == "__main__":
    import os
    ThreadingHTTPServer((os.environ.get("BIND", "127.0.0.1"), int(sys.argv[1])), Handler).serve_forever()
