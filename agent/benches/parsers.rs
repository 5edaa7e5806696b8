//! Parser throughput: the user-space hot path every captured syscall goes
//! through. `cargo xtask bench` runs this with a short measurement time and
//! copies the MB/s into bench/RESULTS.md; `cargo bench -p kspan --bench
//! parsers` runs it alone.
//!
//! The HTTP/1 stream is one keep-alive connection as kspan sees it on the
//! server side: each element is one syscall (a client write / server read
//! of a request, a server write of a response head or body part), captured
//! at kspan's default 4096-byte capture size, so a large body write arrives
//! as a 4 KiB prefix plus a gap, exactly as the ring buffer delivers it.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kspan::{
    capture::decode,
    protocol::{
        db::{DbEvent, DbSession},
        http1::{Chunk, Http1Event, Http1Session},
        http2::{self, Http2Event, Http2Session},
        mysql::MysqlSession,
        postgres::PostgresSession,
        recording,
        redis::RedisSession,
    },
};
use kspan_common::{Call, DATA_EVENT_SIZE, DataEvent, Direction, EventKind, Source};

/// kspan's default `--capture-size`.
const CAPTURE_SIZE: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

/// One syscall: the bytes it moved (the capture keeps a prefix).
struct Syscall {
    dir: Dir,
    bytes: Vec<u8>,
}

/// A conversation of exchanges on one keep-alive connection.
struct Stream {
    syscalls: Vec<Syscall>,
    exchanges: usize,
}

impl Stream {
    fn new() -> Self {
        Stream { syscalls: Vec::new(), exchanges: 0 }
    }
    fn req(&mut self, parts: &[&[u8]]) {
        self.exchanges += 1;
        for p in parts {
            self.syscalls.push(Syscall { dir: Dir::Request, bytes: p.to_vec() });
        }
    }
    fn resp(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.syscalls.push(Syscall { dir: Dir::Response, bytes: p.to_vec() });
        }
    }
    /// Bytes the parser is handed (captured prefixes).
    fn captured_bytes(&self) -> u64 {
        self.syscalls.iter().map(|s| s.bytes.len().min(CAPTURE_SIZE) as u64).sum()
    }
}

fn json_body(len: usize) -> Vec<u8> {
    let mut b = br#"{"items":["#.to_vec();
    let mut i = 0;
    while b.len() + 60 < len {
        b.extend_from_slice(format!(r#"{{"id":{i},"name":"user-{i}","active":true}},"#).as_bytes());
        i += 1;
    }
    b.extend_from_slice(br#"{"id":-1}]}"#);
    b.resize(len, b' ');
    b
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

fn with_len(head: &str, body: &[u8]) -> Vec<u8> {
    let mut m = head.replace("{len}", &body.len().to_string()).into_bytes();
    m.extend_from_slice(body);
    m
}

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/// Ten exchanges in the shapes real services produce: small JSON GETs, a
/// POST and a chunked PUT with bodies, a 24 KiB static file written in two
/// parts (captured as 4 KiB prefixes), chunked streaming responses, 204,
/// 304, 404.
fn http1_stream() -> Stream {
    let mut s = Stream::new();
    let api_get = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: api.internal:8080\r\nUser-Agent: python-requests/2.32.3\r\n\
             Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\
             traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
        )
    };
    let ok_json = "HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Mon, 20 May 2026 10:00:00 GMT\r\n\
                   Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n";

    s.req(&[api_get("/api/users/42").as_bytes()]);
    s.resp(&[&with_len(ok_json, &json_body(348))]);

    let order = json_body(1200);
    let post_head = format!(
        "POST /api/orders HTTP/1.1\r\nHost: api.internal:8080\r\nUser-Agent: python-requests/2.32.3\r\n\
         Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        order.len()
    );
    s.req(&[post_head.as_bytes(), &order]); // requests sends head and body separately
    s.resp(&[&with_len(
        "HTTP/1.1 201 Created\r\nServer: gunicorn\r\nDate: Mon, 20 May 2026 10:00:00 GMT\r\n\
         Connection: keep-alive\r\nLocation: /api/orders/9812\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        br#"{"id":9812,"status":"created"}"#,
    )]);

    let js = vec![b'x'; 24 * 1024];
    let browser_get = format!(
        "GET /static/app.3f9a1c.js HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: {UA}\r\n\
         Accept: */*\r\nAccept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n\
         Referer: https://shop.example.com/cart\r\nSec-Fetch-Dest: script\r\nSec-Fetch-Mode: no-cors\r\n\
         Cookie: session=8c1f0e2a9b7d4e6f8a0b1c2d3e4f5a6b; _ga=GA1.2.1234567890.1716200000; theme=dark\r\n\
         Connection: keep-alive\r\n\r\n"
    );
    s.req(&[browser_get.as_bytes()]);
    let js_head = format!(
        "HTTP/1.1 200 OK\r\nServer: nginx/1.26.3\r\nDate: Mon, 20 May 2026 10:00:00 GMT\r\n\
         Content-Type: application/javascript\r\nContent-Length: {}\r\nLast-Modified: Sun, 19 May 2026 08:00:00 GMT\r\n\
         Connection: keep-alive\r\nETag: \"664a1b2c-6000\"\r\nCache-Control: max-age=31536000\r\nAccept-Ranges: bytes\r\n\r\n",
        js.len()
    );
    s.resp(&[js_head.as_bytes(), &js[..16 * 1024], &js[16 * 1024..]]);

    s.req(&[api_get("/api/events?since=1716200000").as_bytes()]);
    let mut parts: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 200 OK\r\nServer: uvicorn\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
    ];
    for n in [180, 1500, 320, 64, 900] {
        parts.push(chunk(&json_body(n)));
    }
    parts.push(b"0\r\n\r\n".to_vec());
    s.resp(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>());

    s.req(&[api_get("/health").as_bytes()]);
    s.resp(&[b"HTTP/1.1 204 No Content\r\nServer: gunicorn\r\nDate: Mon, 20 May 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n\r\n"]);

    s.req(&[api_get("/api/users?page=2&per_page=50").as_bytes()]);
    let mut head_and_first = b"HTTP/1.1 200 OK\r\nServer: Werkzeug/3.1.3 Python/3.11.7\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    head_and_first.extend_from_slice(&chunk(&json_body(2000)));
    s.resp(&[&head_and_first, &[chunk(&json_body(700)), b"0\r\n\r\n".to_vec()].concat()]);

    let put_head = "PUT /api/users/42/avatar HTTP/1.1\r\nHost: api.internal:8080\r\nUser-Agent: curl/8.5.0\r\n\
                    Accept: */*\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    s.req(&[put_head.as_bytes(), &chunk(&[7; 1000]), &chunk(&[8; 1000]), &chunk(&[9; 300]), b"0\r\n\r\n"]);
    s.resp(&[&with_len(ok_json, br#"{"ok":true,"size":2300}"#)]);

    let conditional = format!(
        "GET /static/logo.svg HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: {UA}\r\nAccept: image/avif,image/webp,*/*\r\n\
         If-None-Match: \"664a1b2c-1a2b\"\r\nIf-Modified-Since: Sun, 19 May 2026 08:00:00 GMT\r\nConnection: keep-alive\r\n\r\n"
    );
    s.req(&[conditional.as_bytes()]);
    s.resp(&[b"HTTP/1.1 304 Not Modified\r\nServer: nginx/1.26.3\r\nDate: Mon, 20 May 2026 10:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"664a1b2c-1a2b\"\r\n\r\n"]);

    s.req(&[api_get("/api/users/99999").as_bytes()]);
    s.resp(&[&with_len(
        "HTTP/1.1 404 Not Found\r\nServer: gunicorn\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        br#"{"error":"not found"}"#,
    )]);

    s.req(&[b"DELETE /api/orders/9812 HTTP/1.1\r\nHost: api.internal:8080\r\nUser-Agent: python-requests/2.32.3\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"]);
    s.resp(&[&with_len(ok_json, br#"{"deleted":9812}"#)]);
    s
}

/// Many small GET/200 exchanges: the per-request fixed cost.
fn small_gets_stream(n: usize) -> Stream {
    let mut s = Stream::new();
    for i in 0..n {
        let req = format!("GET /users/{i} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n");
        s.req(&[req.as_bytes()]);
        s.resp(&[&with_len(
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: keep-alive\r\n\r\n",
            format!(r#"{{"id": "{i}"}}"#).as_bytes(),
        )]);
    }
    s
}

/// Feeds the whole stream to a new session; returns the exchanges seen.
fn parse_stream(stream: &Stream) -> usize {
    let mut session = Http1Session::new();
    let mut exchanges = 0;
    let mut ns = 1_000_000u64;
    for sc in &stream.syscalls {
        let chunk = Chunk {
            data: &sc.bytes[..sc.bytes.len().min(CAPTURE_SIZE)],
            size: sc.bytes.len() as u64,
            enter_ns: ns,
            exit_ns: ns + 2_000,
        };
        ns += 10_000;
        let events = match sc.dir {
            Dir::Request => session.on_request_bytes(black_box(&chunk)),
            Dir::Response => session.on_response_bytes(black_box(&chunk)),
        };
        exchanges += events.iter().filter(|e| matches!(e, Http1Event::Exchange(x) if x.error.is_none())).count();
    }
    black_box(exchanges)
}

fn bench_http1(c: &mut Criterion) {
    let mut group = c.benchmark_group("http1");
    for (name, stream) in [("keepalive_mixed", http1_stream()), ("small_gets", small_gets_stream(100))] {
        // The stream must parse cleanly, or the numbers measure error paths.
        assert_eq!(parse_stream(&stream), stream.exchanges, "{name}: every exchange must complete without error");
        // Machine-readable line for `cargo xtask bench` (exchanges/s, composition).
        println!(
            "kspan-bench: http1/{name} bytes={} syscalls={} exchanges={}",
            stream.captured_bytes(),
            stream.syscalls.len(),
            stream.exchanges
        );
        group.throughput(Throughput::Bytes(stream.captured_bytes()));
        group.bench_function(name, |b| b.iter(|| parse_stream(&stream)));
    }
    group.finish();
}

/// Hand-built h2c (prior knowledge) gRPC traffic, encoded as grpc-go does:
/// HPACK with incremental indexing on first use, indexed afterwards.
mod h2c {
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const WINDOW_UPDATE: u8 = 8;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;

    pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// HPACK integer with an `n`-bit prefix, `flags` in the high bits.
    fn int(out: &mut Vec<u8>, n: u32, flags: u8, v: usize) {
        let max = (1usize << n) - 1;
        if v < max {
            out.push(flags | v as u8);
            return;
        }
        out.push(flags | max as u8);
        let mut rest = v - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        int(out, 7, 0, s.len()); // no Huffman
        out.extend_from_slice(s.as_bytes());
    }

    fn indexed(out: &mut Vec<u8>, idx: usize) {
        int(out, 7, 0x80, idx);
    }

    /// Literal with incremental indexing, name from the table at `idx`.
    fn insert(out: &mut Vec<u8>, idx: usize, value: &str) {
        int(out, 6, 0x40, idx);
        string(out, value);
    }

    /// Literal with incremental indexing and a literal name.
    fn insert_named(out: &mut Vec<u8>, name: &str, value: &str) {
        out.push(0x40);
        string(out, name);
        string(out, value);
    }

    /// A length-prefixed gRPC message of `n` payload bytes.
    fn grpc_message(n: usize) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&(n as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(b'p', n));
        m
    }

    /// (direction is client, bytes) per syscall, and the number of calls.
    pub fn grpc_unary_calls(calls: u32) -> (Vec<(bool, Vec<u8>)>, usize) {
        let mut syscalls = Vec::new();
        let mut hello = super::http2::PREFACE.to_vec();
        // ENABLE_PUSH=0, INITIAL_WINDOW_SIZE=4 MiB; then a connection WINDOW_UPDATE.
        frame(&mut hello, SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0, 0, 4, 0, 0x40, 0, 0]);
        frame(&mut hello, WINDOW_UPDATE, 0, 0, &0x003e_0001u32.to_be_bytes());
        syscalls.push((true, hello));
        let mut server_hello = Vec::new();
        frame(&mut server_hello, SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]); // MAX_CONCURRENT_STREAMS
        frame(&mut server_hello, SETTINGS, ACK, 0, &[]);
        syscalls.push((false, server_hello));
        let mut ack = Vec::new();
        frame(&mut ack, SETTINGS, ACK, 0, &[]);
        syscalls.push((true, ack));

        for i in 0..calls {
            let stream = 1 + 2 * i;
            let mut req_block = vec![0x83, 0x86]; // :method POST, :scheme http
            let mut resp_block = vec![0x88]; // :status 200
            let mut trailers = Vec::new();
            if i == 0 {
                // Client table after these: te=62, user-agent=63,
                // content-type=64, :path=65, :authority=66.
                insert(&mut req_block, 1, "greeter.internal:50051");
                insert(&mut req_block, 4, "/helloworld.Greeter/SayHello");
                insert(&mut req_block, 31, "application/grpc");
                insert(&mut req_block, 58, "grpc-go/1.64.0");
                insert_named(&mut req_block, "te", "trailers");
                // Server table: content-type, then grpc-status on top of it.
                insert(&mut resp_block, 31, "application/grpc");
                insert_named(&mut trailers, "grpc-status", "0");
            } else {
                for idx in [66, 65, 64, 63, 62] {
                    indexed(&mut req_block, idx);
                }
                indexed(&mut resp_block, 63); // content-type
                indexed(&mut trailers, 62); // grpc-status: 0
            }
            // grpc-timeout differs per call: a literal without indexing.
            req_block.push(0x00);
            string(&mut req_block, "grpc-timeout");
            string(&mut req_block, &format!("{}m", 900 + i));

            let mut req = Vec::new();
            frame(&mut req, HEADERS, END_HEADERS, stream, &req_block);
            frame(&mut req, DATA, END_STREAM, stream, &grpc_message(64 + (i as usize % 7) * 16));
            syscalls.push((true, req));

            // Every eighth answer is large: 12 KiB of DATA, one frame per
            // write and small enough to be captured whole (a larger write
            // would be cut at the capture size and flag the stream).
            let body = grpc_message(if i % 8 == 7 { 12 * 1024 } else { 180 });
            let mut resp = Vec::new();
            frame(&mut resp, HEADERS, END_HEADERS, stream, &resp_block);
            for part in body.chunks(4000) {
                frame(&mut resp, DATA, 0, stream, part);
                if body.len() > 4000 {
                    syscalls.push((false, std::mem::take(&mut resp)));
                }
            }
            frame(&mut resp, HEADERS, END_HEADERS | END_STREAM, stream, &trailers);
            syscalls.push((false, resp));
        }
        (syscalls, calls as usize)
    }
}

/// Feeds the h2c conversation to a new session; returns the clean gRPC exchanges.
fn parse_h2c(syscalls: &[(bool, Vec<u8>)]) -> usize {
    let mut session = Http2Session::new(false);
    let mut ok = 0;
    let mut ns = 1_000_000u64;
    for (client, bytes) in syscalls {
        let chunk =
            Chunk { data: &bytes[..bytes.len().min(CAPTURE_SIZE)], size: bytes.len() as u64, enter_ns: ns, exit_ns: ns + 2_000 };
        ns += 10_000;
        let events =
            if *client { session.on_client_bytes(black_box(&chunk)) } else { session.on_server_bytes(black_box(&chunk)) };
        ok += events
            .iter()
            .filter(|e| matches!(e, Http2Event::Exchange(x) if x.error.is_none() && x.grpc_status == Some(0)))
            .count();
    }
    black_box(ok)
}

fn bench_http2(c: &mut Criterion) {
    let (syscalls, calls) = h2c::grpc_unary_calls(32);
    assert_eq!(parse_h2c(&syscalls), calls, "every gRPC call must complete with grpc-status 0");
    let bytes: u64 = syscalls.iter().map(|(_, b)| b.len().min(CAPTURE_SIZE) as u64).sum();
    println!("kspan-bench: http2/grpc_unary bytes={bytes} syscalls={} exchanges={calls}", syscalls.len());
    let mut group = c.benchmark_group("http2");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("grpc_unary", |b| b.iter(|| parse_h2c(&syscalls)));
    group.finish();
}

/// A ring-buffer data record: header plus a typical 512-byte request.
fn data_record(payload: usize) -> Vec<u8> {
    let header = DataEvent {
        kind: EventKind::Data as u8,
        direction: Direction::Ingress as u8,
        source: Source::Syscall as u8,
        call: Call::Read as u8,
        flags: 0,
        _pad: [0; 3],
        tgid: 4242,
        tid: 4243,
        fd: 7,
        captured: payload as u32,
        conn_id: 0x1234_5678,
        enter_ns: 1_000,
        exit_ns: 3_000,
        size: payload as u64,
    };
    // SAFETY: DataEvent is a plain #[repr(C)] struct with explicit padding
    // fields, so all DATA_EVENT_SIZE bytes are initialised.
    let mut rec = unsafe { std::slice::from_raw_parts((&raw const header).cast::<u8>(), DATA_EVENT_SIZE) }.to_vec();
    rec.extend(std::iter::repeat_n(b'a', payload));
    rec
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for payload in [512usize, 4096] {
        let rec = data_record(payload);
        assert!(matches!(decode::decode(&rec), Ok(decode::Event::Data(_))));
        println!("kspan-bench: decode/data_{payload}B bytes={} records=1", rec.len());
        group.throughput(Throughput::Bytes(rec.len() as u64));
        group.bench_function(format!("data_{payload}B"), |b| b.iter(|| decode::decode(black_box(&rec))));
    }
    group.finish();
}

/// A recorded conversation with a real database server
/// (tests/recordings), each piece one syscall captured at the default size.
fn recording(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/recordings").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn replay_db<S: DbSession>(session: fn() -> S, pieces: &[recording::Piece<'_>]) -> usize {
    let mut s = session();
    let mut exchanges = 0;
    let mut ts = 0;
    for p in pieces {
        ts += 10;
        let data = &p.data[..p.data.len().min(CAPTURE_SIZE)];
        let chunk = Chunk { data, size: p.data.len() as u64, enter_ns: ts, exit_ns: ts + 5 };
        let events = if p.from_client { s.on_client_bytes(&chunk) } else { s.on_server_bytes(&chunk) };
        exchanges += events.iter().filter(|e| matches!(e, DbEvent::Exchange(_))).count();
    }
    black_box(exchanges)
}

fn bench_db(c: &mut Criterion) {
    let cases: [(&str, &str, fn(&[recording::Piece<'_>]) -> usize); 3] = [
        ("postgres/pgbench_prepared", "postgres-extended.rec", |p| replay_db(|| PostgresSession::new(false), p)),
        ("redis/benchmark_pipelined", "redis-pipeline.rec", |p| replay_db(|| RedisSession::new(false), p)),
        ("mysql/cli_session", "mysql-cli.rec", |p| replay_db(|| MysqlSession::new(false), p)),
    ];
    for (id, file, run) in cases {
        let bytes = recording(file);
        let pieces = recording::parse(&bytes).expect("a valid recording");
        let exchanges = run(&pieces);
        assert!(exchanges > 0, "{file} must give exchanges");
        let captured: u64 = pieces.iter().map(|p| p.data.len().min(CAPTURE_SIZE) as u64).sum();
        println!("kspan-bench: {id} bytes={captured} syscalls={} exchanges={exchanges}", pieces.len());
        let (group_name, function) = id.split_once('/').unwrap();
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Bytes(captured));
        group.bench_function(function, |b| b.iter(|| run(&pieces)));
        group.finish();
    }
}

criterion_group!(benches, bench_http1, bench_http2, bench_db, bench_decode);
criterion_main!(benches);
