"""An asyncio HTTPS/1.1 server with no tracing code: asyncio's TLS runs
OpenSSL over memory BIOs (ssl.MemoryBIO), so the socket I/O happens outside
SSL_read/SSL_write. Answers GET /hop/N with `leaf-N`, keep-alive.
Usage: TLS_CERT=pem TLS_KEY=pem asyncio_https.py PORT"""
import asyncio
import os
import ssl
import sys


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            if target.startswith("/hop/"):
                status, body = "200 OK", f"leaf-{target.split('/')[2]}".encode()
            else:
                status, body = "404 Not Found", b""
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nContent-Type: text/plain\r\n\r\n".encode() + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), ssl=ctx)
    async with server:
        await server.serve_forever()


asyncio.run(main())
