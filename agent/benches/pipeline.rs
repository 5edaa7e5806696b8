//! kspan's user-space cost per span, on its own: ring-buffer records as the
//! kernel programs write them for a traced nginx (keep-alive connections,
//! a GET read, a response head written with its body left uncaptured), run
//! through what the daemon runs on them: decode, the `Pipeline` (connection
//! table, stream, HTTP/1 parser, linker, span builder), and the OTLP
//! protobuf encoding of each batch. Only the channel to the exporter task
//! and the socket write are left out.
//!
//! The end-to-end figure (benchmark 3 of `cargo xtask bench`) shares its
//! two cores with nginx, wrk and the receiver and moves with them; this
//! one moves only with kspan's code, so it is what tells a change to the
//! hot path apart from noise.

use std::{hint::black_box, path::Path};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kspan::{
    capture::decode,
    export::{ExportMetrics, proto::Encoder},
    metrics::Metrics,
    pipeline::Pipeline,
    span::{Clock, model::Span, route::RouteTemplater, sampler::Sampler},
};
use kspan_common::{Call, ConnEvent, DataEvent, Direction, EventKind, FLAG_TRUNCATED, Role, Source};

/// The daemon's allocator: allocation is a good part of the cost measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// wrk's default in `cargo xtask bench`: 32 keep-alive connections.
const CONNECTIONS: u64 = 32;
/// kspan's default OTLP batch (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
const BATCH: usize = 512;
const BODY_LEN: u64 = 1024;

const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n";
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 03:40:00 GMT\r\n\
Content-Type: text/html\r\nContent-Length: 1024\r\nLast-Modified: Mon, 07 Dec 2026 03:00:00 GMT\r\n\
Connection: keep-alive\r\nETag: \"6754a0b0-400\"\r\nAccept-Ranges: bytes\r\n\r\n";

fn bytes_of<T>(value: &T) -> &[u8] {
    // SAFETY: the kspan_common event types are plain #[repr(C)] structs with
    // explicit padding fields, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

fn conn_open(tgid: u32, conn: u64) -> Vec<u8> {
    let mut local_addr = [0u8; 16];
    local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"nginx");
    let ev = ConnEvent {
        kind: EventKind::ConnOpen as u8,
        role: Role::Server as u8,
        call: Call::Accept as u8,
        family: 2,
        tgid,
        tid: tgid,
        fd: 10 + conn as i32,
        conn_id: conn,
        ts_ns: 1_000,
        inode: 900_000 + conn,
        netns: 0,
        local_port: 18080,
        remote_port: 40_000 + conn as u16,
        local_addr,
        remote_addr: local_addr,
        comm,
    };
    bytes_of(&ev).to_vec()
}

fn data(tgid: u32, conn: u64, direction: Direction, call: Call, captured: &[u8], size: u64) -> Vec<u8> {
    let ev = DataEvent {
        kind: EventKind::Data as u8,
        direction: direction as u8,
        source: Source::Syscall as u8,
        call: call as u8,
        flags: if (captured.len() as u64) < size { FLAG_TRUNCATED } else { 0 },
        _pad: [0; 3],
        tgid,
        tid: tgid,
        fd: 10 + conn as i32,
        captured: captured.len() as u32,
        conn_id: conn,
        enter_ns: 0,
        exit_ns: 0,
        size,
    };
    let mut rec = bytes_of(&ev).to_vec();
    rec.extend_from_slice(captured);
    rec
}

/// The records of one batch of exchanges, round robin over the
/// connections: a request read, then its response written.
struct Records {
    records: Vec<Vec<u8>>,
    /// Monotonic clock of the next batch, so spans never go back in time.
    now_ns: u64,
}

const ENTER_NS_AT: usize = std::mem::offset_of!(DataEvent, enter_ns);
const EXIT_NS_AT: usize = std::mem::offset_of!(DataEvent, exit_ns);

impl Records {
    fn new(tgid: u32) -> Self {
        let head_and_body = RESPONSE_HEAD.len() as u64 + BODY_LEN;
        let mut records = Vec::with_capacity(2 * BATCH);
        for i in 0..BATCH as u64 {
            let conn = 1 + i % CONNECTIONS;
            records.push(data(tgid, conn, Direction::Ingress, Call::Read, REQUEST, REQUEST.len() as u64));
            records.push(data(tgid, conn, Direction::Egress, Call::Writev, RESPONSE_HEAD, head_and_body));
        }
        Self { records, now_ns: 1_000_000 }
    }

    /// Stamps the next batch's times: 20 µs per syscall, 5 µs each.
    fn next_batch(&mut self) -> &[Vec<u8>] {
        for rec in &mut self.records {
            rec[ENTER_NS_AT..ENTER_NS_AT + 8].copy_from_slice(&self.now_ns.to_ne_bytes());
            rec[EXIT_NS_AT..EXIT_NS_AT + 8].copy_from_slice(&(self.now_ns + 5_000).to_ne_bytes());
            self.now_ns += 20_000;
        }
        &self.records
    }
}

fn pipeline() -> Pipeline {
    let routes = RouteTemplater::new(&[]).expect("no route patterns");
    let metrics = Metrics::new(std::sync::Arc::new(ExportMetrics::default()));
    let always_on = Sampler::from_values(Some("always_on"), None).expect("a valid sampler");
    Pipeline::new(10_000, Path::new("/proc"), routes, always_on, Clock::now(), metrics)
}

/// One batch through decode, the pipeline and the OTLP encoder; the
/// encoded request's length, so nothing is optimised away.
fn run_batch(pipeline: &mut Pipeline, encoder: &mut Encoder, records: &[Vec<u8>], spans: &mut Vec<Span>) -> usize {
    for rec in records {
        let event = decode::decode(rec).expect("a well-formed record");
        pipeline.handle(&event, &mut |span| spans.push(span));
    }
    pipeline.release_held(true, &mut |span| spans.push(span));
    let Some(resource) = spans.first().map(|s| s.resource.clone()) else {
        return 0;
    };
    let len = encoder.request([(&*resource, spans.iter())]).len();
    spans.clear();
    len
}

fn bench_pipeline(c: &mut Criterion) {
    // The bench's own pid: the registry reads a live /proc entry once, as
    // the daemon does for a traced process.
    let tgid = std::process::id();
    let mut pipeline = pipeline();
    let mut encoder = Encoder::default();
    let mut spans = Vec::with_capacity(BATCH);
    let mut records = Records::new(tgid);
    for conn in 1..=CONNECTIONS {
        let rec = conn_open(tgid, conn);
        pipeline.handle(&decode::decode(&rec).expect("a well-formed record"), &mut |_| {});
    }
    // Warm-up also checks the bench measures what it says: one span per
    // exchange, all of them encoded.
    let batch_bytes: usize = records.next_batch().iter().map(Vec::len).sum();
    let encoded = run_batch(&mut pipeline, &mut encoder, records.next_batch(), &mut spans);
    assert_eq!(pipeline.metrics.spans.get(), BATCH as u64, "one span per exchange");
    assert!(encoded > BATCH * 100, "every span encoded ({encoded} bytes)");
    println!("kspan-bench: pipeline/nginx_keepalive bytes={batch_bytes} records={} exchanges={BATCH}", 2 * BATCH);

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(batch_bytes as u64));
    group.bench_function("nginx_keepalive", |b| {
        b.iter(|| black_box(run_batch(&mut pipeline, &mut encoder, records.next_batch(), &mut spans)))
    });
    group.finish();
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
