#!/usr/bin/env python3
"""OTLP trace receiver for kspan's integration tests.

Built on the official protobuf definitions (PyPI `opentelemetry-proto`), so
what it accepts is exactly what a real collector accepts: if kspan emits a
malformed export, decoding fails here and the test sees no span.

Usage:
    otlp_receiver.py --grpc-port P1 --http-port P2 --out FILE
                     [--ready-file F] [--fail-first N]

* gRPC  `opentelemetry.proto.collector.trace.v1.TraceService/Export` on
  127.0.0.1:P1 (gzip/deflate message compression is handled by grpcio).
* HTTP  `POST /v1/traces` on 127.0.0.1:P2; `application/x-protobuf` and
  `application/json` (OTLP/JSON: hex ids, integer enums), optional
  `Content-Encoding: gzip|deflate`, chunked or Content-Length bodies.
  The response is an ExportTraceServiceResponse in the request's encoding.
* Ports may be 0; the bound ports are written as JSON
  `{"grpc": P1, "http": P2, "pid": PID}` to the ready file (write tmp + rename,
  so a poller never reads a partial file) once both servers accept.
* `--fail-first N`: the first N export requests (counted across both
  transports) are answered gRPC UNAVAILABLE / HTTP 503, to exercise retries.
* Every span received is appended to FILE as one JSON line (format described
  in `span_record`). All lines of one export request are written with a single
  os.write on an O_APPEND fd under a lock, *before* the client gets its
  success reply, so a reader never sees half a line and a client that saw
  success is guaranteed its spans are already on disk.
* SIGTERM / SIGINT stop both servers and exit 0.

A one-line summary of each request goes to stderr for debugging.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import math
import os
import signal
import ssl
import sys
import threading
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2

# Large enough for any batch kspan could plausibly send; grpc's default 4 MiB
# would turn a big-but-valid batch into a confusing RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def log(msg: str) -> None:
    print(f"otlp_receiver: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# protobuf -> JSON-friendly conversion
# ---------------------------------------------------------------------------

def any_value(v) -> object:
    """AnyValue -> plain JSON value (ints stay ints, bools stay bools)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "string_value":
        return v.string_value
    if which == "bool_value":
        return v.bool_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        d = v.double_value
        # NaN/inf are not valid JSON (serde_json would reject the whole line).
        return d if math.isfinite(d) else str(d)
    if which == "bytes_value":
        # JSON has no bytes; hex is what tests can compare against easily.
        return v.bytes_value.hex()
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return None


def attributes(kvs) -> dict:
    # Later duplicates win, matching how most backends treat them.
    return {kv.key: any_value(kv.value) for kv in kvs}


def enum_suffix(enum_type, value: int, prefix: str) -> str:
    try:
        name = enum_type.Name(value)
    except ValueError:
        return str(value)
    return name[len(prefix):] if name.startswith(prefix) else name


def span_record(transport, encoding, headers, request_seq, resource_spans, scope_spans, span) -> dict:
    """One JSON line per span. Keys (stable; the Rust side deserialises them):

    transport        "grpc" | "http"
    encoding         "protobuf" | "json"   (HTTP body encoding; grpc: "protobuf")
    request_seq      1-based number of the export request among *all* requests
                     received (rejected ones included), e.g. >N with --fail-first N
    headers          request metadata/headers, lowercased keys; repeated keys
                     joined with ", "; binary (-bin) gRPC values as hex
    resource         resource attributes {key: value}
    resource_schema_url, scope_schema_url
    scope            {"name", "version", "attributes"}
    trace_id, span_id, parent_span_id   lowercase hex ("" when empty)
    trace_state, flags (int), name
    kind             "UNSPECIFIED"|"INTERNAL"|"SERVER"|"CLIENT"|"PRODUCER"|"CONSUMER"
    start, end       unix nanos (ints)
    status           {"code": "UNSET"|"OK"|"ERROR", "message": str}
    attributes       {key: value}
    events           [{"name", "time", "attributes"}]
    links            [{"trace_id", "span_id", "trace_state", "flags", "attributes"}]
    dropped_attributes_count, dropped_events_count, dropped_links_count (ints)
    """
    return {
        "transport": transport,
        "encoding": encoding,
        "request_seq": request_seq,
        "headers": headers,
        "resource": attributes(resource_spans.resource.attributes),
        "resource_schema_url": resource_spans.schema_url,
        "scope": {
            "name": scope_spans.scope.name,
            "version": scope_spans.scope.version,
            "attributes": attributes(scope_spans.scope.attributes),
        },
        "scope_schema_url": scope_spans.schema_url,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "trace_state": span.trace_state,
        "flags": span.flags,
        "name": span.name,
        "kind": enum_suffix(trace_pb2.Span.SpanKind, span.kind, "SPAN_KIND_"),
        "start": span.start_time_unix_nano,
        "end": span.end_time_unix_nano,
        "status": {
            "code": enum_suffix(trace_pb2.Status.StatusCode, span.status.code, "STATUS_CODE_"),
            "message": span.status.message,
        },
        "attributes": attributes(span.attributes),
        "events": [
            {"name": e.name, "time": e.time_unix_nano, "attributes": attributes(e.attributes)}
            for e in span.events
        ],
        "links": [
            {
                "trace_id": l.trace_id.hex(),
                "span_id": l.span_id.hex(),
                "trace_state": l.trace_state,
                "flags": l.flags,
                "attributes": attributes(l.attributes),
            }
            for l in span.links
        ],
        "dropped_attributes_count": span.dropped_attributes_count,
        "dropped_events_count": span.dropped_events_count,
        "dropped_links_count": span.dropped_links_count,
    }


# ---------------------------------------------------------------------------
# shared state: request counter, --fail-first, output file
# ---------------------------------------------------------------------------

class Sink:
    def __init__(self, out_path: str, fail_first: int, count_only: bool = False):
        # O_TRUNC: every receiver run starts with an empty file, so a reused
        # path never mixes spans from an earlier test. O_APPEND + one write
        # per request keeps lines whole for concurrent readers.
        self.fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.lock = threading.Lock()
        self.fail_first = fail_first
        self.count_only = count_only
        self.requests = 0

    def next_request(self) -> tuple[int, bool]:
        """Returns (request_seq, should_fail)."""
        with self.lock:
            self.requests += 1
            return self.requests, self.requests <= self.fail_first

    def record(self, transport: str, encoding: str, headers: dict, seq: int,
               req: trace_service_pb2.ExportTraceServiceRequest) -> int:
        if self.count_only:
            return self._record_counts(req)
        lines = []
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    lines.append(json.dumps(span_record(transport, encoding, headers, seq, rs, ss, span),
                                            separators=(",", ":")) + "\n")
        if lines:
            data = "".join(lines).encode()
            with self.lock:
                view = memoryview(data)
                while view:  # regular files don't short-write, but be correct anyway
                    n = os.write(self.fd, view)
                    view = view[n:]
        return len(lines)

    def _record_counts(self, req) -> int:
        # One line per request instead of one per span: benchmarks need the
        # totals, and JSON per span made this receiver the busiest process
        # on the machine it shares with what is measured.
        total = server = 0
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                total += len(ss.spans)
                server += sum(1 for span in ss.spans if span.kind == trace_pb2.Span.SPAN_KIND_SERVER)
        line = json.dumps({"batch_total": total, "batch_server": server}) + "\n"
        with self.lock:
            os.write(self.fd, line.encode())
        return total

    def close(self) -> None:
        os.close(self.fd)


# ---------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------

class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Sink):
        self.sink = sink

    def Export(self, request, context):
        headers: dict[str, str] = {}
        for key, value in context.invocation_metadata():
            key = key.lower()
            if isinstance(value, bytes):
                value = value.hex()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        seq, fail = self.sink.next_request()
        if fail:
            log(f"grpc request #{seq}: failing on purpose (UNAVAILABLE)")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"otlp_receiver: --fail-first (request #{seq})")
        n = self.sink.record("grpc", "protobuf", headers, seq, request)
        log(f"grpc request #{seq}: {n} span(s)")
        return trace_service_pb2.ExportTraceServiceResponse()


def start_grpc(sink: Sink, port: int, tls: "Tls | None") -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # grpcio sets SO_REUSEPORT by default, which would let a fixed
            # --grpc-port silently share a port with another server.
            ("grpc.so_reuseport", 0),
        ],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(sink), server)
    if tls is None:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        creds = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)],
            root_certificates=tls.client_ca,
            require_client_auth=tls.client_ca is not None,
        )
        bound = server.add_secure_port(f"127.0.0.1:{port}", creds)
    if bound == 0:
        raise OSError(f"cannot bind gRPC port 127.0.0.1:{port}")
    server.start()
    return server, bound


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

def _hex_ids_to_base64(obj: dict, keys: tuple[str, ...]) -> None:
    # OTLP/JSON encodes ids as hex, but protobuf's JSON mapping for `bytes`
    # is base64; convert before handing the dict to json_format.
    for k in keys:
        v = obj.get(k)
        if isinstance(v, str) and v:
            obj[k] = base64.b64encode(bytes.fromhex(v)).decode()


def parse_otlp_json(body: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    doc = json.loads(body)
    for rs in doc.get("resourceSpans", doc.get("resource_spans", [])) or []:
        for ss in rs.get("scopeSpans", rs.get("scope_spans", [])) or []:
            for span in ss.get("spans", []) or []:
                _hex_ids_to_base64(span, ("traceId", "spanId", "parentSpanId",
                                          "trace_id", "span_id", "parent_span_id"))
                for link in span.get("links", []) or []:
                    _hex_ids_to_base64(link, ("traceId", "spanId", "trace_id", "span_id"))
    req = trace_service_pb2.ExportTraceServiceRequest()
    # Unknown fields are ignored, as the OTLP spec asks of receivers.
    json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    return req


def rpc_status(code: int, message: str) -> bytes:
    """Hand-encoded google.rpc.Status{code=1, message=2}: OTLP/HTTP error bodies
    are that message, and it is not part of opentelemetry-proto."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    msg = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(msg)) + msg


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so keep-alive clients (reqwest, requests) reuse connections;
    # this requires every response to carry Content-Length, which _reply does.
    protocol_version = "HTTP/1.1"
    server_version = "kspan-otlp-receiver"
    sink: Sink  # set on the subclass in start_http

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass  # one summary line per request is logged by do_POST instead

    def _reply(self, status: int, body: bytes, content_type: str, extra=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, grpc_code: int, message: str, json_body: bool, extra=None) -> None:
        log(f"http {self.command} {self.path}: {status} {message}")
        if json_body:
            body = json.dumps({"code": grpc_code, "message": message}).encode()
            self._reply(status, body, "application/json", extra)
        else:
            self._reply(status, rpc_status(grpc_code, message), "application/x-protobuf", extra)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # consume trailers up to the blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(length) if length else b""

    def do_POST(self):  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0]
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        is_json = content_type == "application/json"
        try:
            body = self._read_body()
        except (ValueError, OSError) as e:
            self.close_connection = True
            return self._error(400, 3, f"cannot read body: {e}", is_json)
        if path != "/v1/traces":
            return self._error(404, 5, f"unknown path {path}", is_json)
        if content_type not in ("application/x-protobuf", "application/json"):
            return self._error(415, 3, f"unsupported Content-Type {content_type!r}", False)

        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                return self._error(415, 3, f"unsupported Content-Encoding {encoding!r}", is_json)
        except (OSError, zlib.error, EOFError) as e:
            return self._error(400, 3, f"bad {encoding} body: {e}", is_json)

        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value

        seq, fail = self.sink.next_request()
        if fail:
            # Retry-After: 0 so well-behaved clients that honour it don't stall the test.
            return self._error(503, 14, f"otlp_receiver: --fail-first (request #{seq})",
                               is_json, {"Retry-After": "0"})
        try:
            if is_json:
                req = parse_otlp_json(body)
            else:
                req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        except (DecodeError, json_format.ParseError, ValueError, TypeError, AttributeError) as e:
            return self._error(400, 3, f"cannot decode {content_type} request #{seq}: {e}", is_json)

        n = self.sink.record("http", "json" if is_json else "protobuf", headers, seq, req)
        log(f"http request #{seq} ({content_type}{', ' + encoding if encoding else ''}): {n} span(s)")
        resp = trace_service_pb2.ExportTraceServiceResponse()
        if is_json:
            self._reply(200, json_format.MessageToJson(resp).encode(), "application/json")
        else:
            self._reply(200, resp.SerializeToString(), "application/x-protobuf")

    def do_GET(self):  # noqa: N802
        self._error(405, 12, "only POST /v1/traces is supported", False, {"Allow": "POST"})

    do_PUT = do_DELETE = do_PATCH = do_GET


def start_http(sink: Sink, port: int, tls: "Tls | None") -> tuple[ThreadingHTTPServer, int]:
    handler = type("BoundHandler", (Handler,), {"sink": sink})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls.cert_path, tls.key_path)
        if tls.client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(tls.client_ca_path)
        # The handshake runs in the request's own thread, not in accept(),
        # so a client that fails it cannot stall the others.
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    httpd.daemon_threads = True  # don't let an idle keep-alive connection block exit
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                     name="otlp-http", daemon=True).start()
    return httpd, httpd.server_address[1]


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

class Tls:
    """Server certificate and key, and the CA client certificates must come
    from (None: no client certificate asked for)."""

    def __init__(self, cert_path: str, key_path: str, client_ca_path: "str | None"):
        self.cert_path, self.key_path, self.client_ca_path = cert_path, key_path, client_ca_path
        with open(cert_path, "rb") as f:
            self.cert = f.read()
        with open(key_path, "rb") as f:
            self.key = f.read()
        self.client_ca = None
        if client_ca_path:
            with open(client_ca_path, "rb") as f:
                self.client_ca = f.read()


def write_ready(path: str, info: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)  # atomic: a poller sees no file or the whole file


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--grpc-port", type=int, required=True, help="0 = ephemeral")
    ap.add_argument("--http-port", type=int, required=True, help="0 = ephemeral")
    ap.add_argument("--out", required=True, help="JSON-lines file, one line per span")
    ap.add_argument("--ready-file", help="written with the bound ports once serving")
    ap.add_argument("--count-only", action="store_true",
                    help="write one {batch_total, batch_server} line per request, not one per span")
    ap.add_argument("--fail-first", type=int, default=0,
                    help="answer UNAVAILABLE/503 to the first N export requests")
    ap.add_argument("--tls-cert", help="serve both transports over TLS with this PEM certificate")
    ap.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    ap.add_argument("--tls-client-ca", help="demand client certificates signed by this PEM CA")
    args = ap.parse_args(argv)
    tls = Tls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None

    stop = threading.Event()
    # Installed before binding so a SIGTERM that arrives during start-up still
    # ends in a clean exit instead of a traceback.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    sink = Sink(args.out, args.fail_first, args.count_only)
    grpc_server = None
    try:
        grpc_server, grpc_port = start_grpc(sink, args.grpc_port, tls)
        httpd, http_port = start_http(sink, args.http_port, tls)
    except (OSError, RuntimeError) as e:  # grpcio raises RuntimeError on bind failure
        log(f"cannot start (grpc port {args.grpc_port}, http port {args.http_port}): {e}")
        if grpc_server is not None:
            grpc_server.stop(grace=0)
        return 1
    info = {"grpc": grpc_port, "http": http_port, "pid": os.getpid(), "tls": tls is not None}
    if args.ready_file:
        write_ready(args.ready_file, info)
    log(f"listening grpc=127.0.0.1:{grpc_port} http=127.0.0.1:{http_port} "
        f"out={args.out} fail_first={args.fail_first}")

    # Event.wait with a timeout keeps the main thread interruptible by signals.
    while not stop.wait(0.5):
        pass

    log("shutting down")
    httpd.shutdown()
    httpd.server_close()
    grpc_server.stop(grace=1).wait()
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
