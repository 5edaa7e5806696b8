#!/usr/bin/env python3
"""Records a client/server conversation in kspan's recording format.

    record_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT OUT_FILE

Accepts connections on 127.0.0.1:LISTEN_PORT, relays each to the upstream,
and appends every recv() to OUT_FILE as `dir (b'C'|b'S')`, `len u32 LE`,
bytes (see agent/src/protocol/recording.rs). Connections are recorded one
after another into one file; run the client once per recording for clean
single-connection files. Stops on SIGTERM/SIGINT.
"""
import selectors
import socket
import struct
import sys


def main():
    listen_port = int(sys.argv[1])
    host, port = sys.argv[2].rsplit(":", 1)
    out = open(sys.argv[3], "ab")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(16)
    print("ready", flush=True)
    while True:
        client, _ = srv.accept()
        upstream = socket.create_connection((host, int(port)))
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, (b"C", upstream))
        sel.register(upstream, selectors.EVENT_READ, (b"S", client))
        open_ends = 2
        while open_ends:
            for key, _ in sel.select():
                tag, peer = key.data
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionResetError:
                    data = b""  # a reset ends that side like a close
                if not data:
                    sel.unregister(key.fileobj)
                    try:
                        peer.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    open_ends -= 1
                    continue
                out.write(tag + struct.pack("<I", len(data)) + data)
                out.flush()
                peer.sendall(data)
        client.close()
        upstream.close()


if __name__ == "__main__":
    main()
