//! Conversations recorded from a real redis-server 7.0 (Debian's, on
//! loopback, `--save '' --appendonly no`) through tests/peers/record_proxy.py,
//! replayed whole, re-chunked at every byte, and with the capture cut to a
//! prefix per syscall:
//!
//! - redis-cli.rec: `redis-cli` fed SET, GET, HSET, HGETALL, INCR on a
//!   string (ERR), LPUSH, LRANGE, HGET on a string (WRONGTYPE), a refused
//!   `AUTH secretpass`, SELECT 1, MULTI..EXEC, DEL, CONFIG GET, PING; it
//!   starts with redis-cli's own `COMMAND DOCS` (a 170 KB nested reply).
//! - redis-pipeline.rec: `redis-benchmark -P 16 -n 640 -t
//!   set,get,lpush,lrange_100 -c 1` (its connections back to back).
//! - redis-resp3.rec: `redis-cli -3` (HELLO 3, maps, sets, doubles, nulls).
//! - redis-pubsub.rec: `redis-cli subscribe news sports`, three messages
//!   published from another connection.

use super::{Driver, check_events};
use crate::protocol::db::{DbEvent, DbExchange, DbFailure};
use crate::protocol::recording::{self, Piece};

const CLI: &[u8] = include_bytes!("../../../../../tests/recordings/redis-cli.rec");
const PIPELINE: &[u8] = include_bytes!("../../../../../tests/recordings/redis-pipeline.rec");
const RESP3: &[u8] = include_bytes!("../../../../../tests/recordings/redis-resp3.rec");
const PUBSUB: &[u8] = include_bytes!("../../../../../tests/recordings/redis-pubsub.rec");

/// Feeds pieces, each cut into chunks of `step` bytes, each chunk's
/// capture cut to `capture` bytes (the rest is a gap), then closes.
fn replay(pieces: &[Piece], step: usize, capture: usize) -> Driver {
    let mut d = Driver::new();
    for p in pieces {
        for chunk in p.data.chunks(step.max(1)) {
            let seen = &chunk[..chunk.len().min(capture)];
            if p.from_client {
                d.client_gap(seen, chunk.len() as u64);
            } else {
                d.server_gap(seen, chunk.len() as u64);
            }
        }
    }
    d.close(false);
    d
}

/// What an exchange says, timestamps aside.
type Summary =
    (u64, Option<String>, Option<String>, Option<String>, Option<u64>, Option<String>, Option<DbFailure>, bool);

fn summary(x: &DbExchange) -> Summary {
    (
        x.seq,
        x.operation.clone(),
        x.query_text.clone(),
        x.namespace.clone(),
        x.rows,
        x.error.as_ref().map(|e| format!("{} {}", e.code, e.message)),
        x.failure,
        x.response_first.is_some(),
    )
}

fn summaries(d: &Driver) -> Vec<Summary> {
    d.exchanges().into_iter().map(summary).collect()
}

/// Every way of cutting the streams gives the same exchanges: each byte its
/// own chunk (every split point at once), a few other steps, and each
/// small piece split in two at every offset.
fn same_at_every_split(pieces: &[Piece], want: &[Summary]) {
    for step in [1, 2, 3, 5, 16, 100, 4096] {
        assert_eq!(summaries(&replay(pieces, step, usize::MAX)), want, "chunks of {step}");
    }
    for (i, piece) in pieces.iter().enumerate().filter(|(_, p)| p.data.len() <= 1024) {
        for cut in 1..piece.data.len() {
            let (a, b) = piece.data.split_at(cut);
            let mut split: Vec<Piece> = pieces[..i].to_vec();
            split.push(Piece { from_client: piece.from_client, data: a });
            split.push(Piece { from_client: piece.from_client, data: b });
            split.extend_from_slice(&pieces[i + 1..]);
            assert_eq!(summaries(&replay(&split, usize::MAX, usize::MAX)), want, "piece {i} cut at {cut}");
        }
    }
}

#[test]
fn redis_cli_session() {
    let pieces = recording::parse(CLI).unwrap();
    let d = replay(&pieces, usize::MAX, usize::MAX);
    let x = d.exchanges();
    assert_eq!(
        d.ops(),
        [
            "COMMAND DOCS",
            "SET",
            "GET",
            "HSET",
            "HGETALL",
            "INCR",
            "LPUSH",
            "LRANGE",
            "HGET",
            "AUTH",
            "SELECT",
            "SET",
            "MULTI",
            "SET",
            "INCR",
            "GET",
            "EXEC",
            "GET",
            "DEL",
            "CONFIG GET",
            "PING",
        ]
    );
    assert_eq!(x[1].query_text.as_deref(), Some("SET user:1 ?"));
    assert_eq!(x[3].query_text.as_deref(), Some("HSET h ? ? ? ?"));
    assert_eq!(x[4].rows, Some(4));
    assert_eq!(x[5].error.as_ref().map(|e| e.code.as_str()), Some("ERR"));
    assert_eq!(x[7].rows, Some(3));
    let wrongtype = x[8].error.as_ref().unwrap();
    assert_eq!(wrongtype.code, "WRONGTYPE");
    assert_eq!(wrongtype.message, "Operation against a key holding the wrong kind of value");
    assert_eq!(x[9].query_text.as_deref(), Some("AUTH ?"));
    assert!(x[9].error.is_some());
    assert_eq!(x[9].user, None, "a refused AUTH logs nobody in");
    assert!(!format!("{:?}", d.events).contains("secretpass"));
    assert!(x[..10].iter().all(|x| x.namespace.as_deref() == Some("0")));
    assert!(x[10..].iter().all(|x| x.namespace.as_deref() == Some("1")));
    assert_eq!(x[16].rows, Some(3), "EXEC returns the queued commands' replies");
    assert_eq!(x[18].query_text.as_deref(), Some("DEL k1 k2"));
    assert_eq!(x[19].query_text.as_deref(), Some("CONFIG GET maxmemory"));
    assert!(x.iter().all(|x| x.failure.is_none() && x.response_last.is_some()));
    assert_eq!(x.iter().filter(|x| x.error.is_some()).count(), 3);

    same_at_every_split(&pieces, &summaries(&d));
}

#[test]
fn redis_cli_session_with_4k_capture() {
    let pieces = recording::parse(CLI).unwrap();
    let whole = summaries(&replay(&pieces, usize::MAX, usize::MAX));
    let d = replay(&pieces, usize::MAX, 4096);
    let got = summaries(&d);
    // COMMAND DOCS's 170 KB reply is cut in every read: that exchange is
    // truncated, the rest is exact.
    assert_eq!(got.len(), whole.len());
    assert_eq!(got[0].6, Some(DbFailure::Truncated));
    assert_eq!(got[1..], whole[1..]);
}

#[test]
fn redis_benchmark_pipeline() {
    // redis-benchmark -P 16 -n 640 -t set,get,lpush,lrange_100 -c 1: its
    // connections (a CONFIG GET one, then one per test) back to back.
    let pieces = recording::parse(PIPELINE).unwrap();
    let d = replay(&pieces, usize::MAX, usize::MAX);
    let x = d.exchanges();
    assert_eq!(x.len(), 3202);
    let count = |op: &str| x.iter().filter(|x| x.operation.as_deref() == Some(op)).count();
    assert_eq!(
        (count("SET"), count("GET"), count("LPUSH"), count("LRANGE"), count("CONFIG GET")),
        (640, 640, 1280, 640, 2)
    );
    assert!(x.iter().all(|x| x.failure.is_none() && x.error.is_none() && x.response_last.is_some()));
    let lranges: Vec<_> = x.iter().filter(|x| x.operation.as_deref() == Some("LRANGE")).collect();
    assert!(lranges.iter().all(|x| x.rows == Some(100) && x.query_text.as_deref() == Some("LRANGE mylist ? ?")));
    assert_eq!(x[2].query_text.as_deref(), Some("SET key:__rand_int__ ?"));
    // Sixteen commands per write: sixteen exchanges share a request syscall.
    assert_eq!(x[2].request_first, x[17].request_first);
    assert_ne!(x[2].request_first, x[18].request_first);

    let want = summaries(&d);
    for step in [1, 7, 100] {
        assert_eq!(summaries(&replay(&pieces, step, usize::MAX)), want, "chunks of {step}");
    }
}

#[test]
fn redis_benchmark_pipeline_with_small_capture() {
    // Each write of sixteen commands captured to 64 bytes: most commands
    // are never seen. What is reported stays consistent and true.
    let pieces = recording::parse(PIPELINE).unwrap();
    let d = replay(&pieces, usize::MAX, 64);
    check_events(&d.events);
    let x = d.exchanges();
    assert!(!x.is_empty());
    assert!(x.iter().all(|x| x.error.is_none()));
    let started = d.events.iter().filter(|e| matches!(e, DbEvent::Started { .. })).count();
    assert_eq!(started, x.len());
}

#[test]
fn redis_cli_resp3_session() {
    let pieces = recording::parse(RESP3).unwrap();
    let d = replay(&pieces, usize::MAX, usize::MAX);
    let x = d.exchanges();
    assert_eq!(
        d.ops(),
        ["HELLO", "COMMAND DOCS", "HSET", "HGETALL", "SADD", "SMEMBERS", "ZADD", "ZSCORE", "GET", "EXISTS"]
    );
    assert_eq!(x[0].rows, Some(7), "HELLO's map of server properties");
    assert_eq!(x[3].rows, Some(2), "a map's rows are its pairs");
    assert_eq!(x[5].rows, Some(2));
    assert_eq!(x[8].rows, None);
    assert!(x.iter().all(|x| x.failure.is_none() && x.error.is_none()));
    same_at_every_split(&pieces, &summaries(&d));
}

#[test]
fn redis_cli_pubsub_session() {
    let pieces = recording::parse(PUBSUB).unwrap();
    let d = replay(&pieces, usize::MAX, usize::MAX);
    let x = d.exchanges();
    assert_eq!(x.len(), 1, "confirmations of the second channel and messages are no exchanges");
    assert_eq!(x[0].query_text.as_deref(), Some("SUBSCRIBE news sports"));
    assert!(x[0].failure.is_none());
    same_at_every_split(&pieces, &summaries(&d));
}

#[test]
fn damaged_recordings_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for bytes in [CLI, RESP3, PUBSUB] {
        let pieces = recording::parse(bytes).unwrap();
        for round in 0..20 {
            let mut d = if round % 4 == 0 { Driver::mid_stream() } else { Driver::new() };
            for p in &pieces {
                let mut data = p.data.to_vec();
                for _ in 0..(next() % 3) {
                    if !data.is_empty() {
                        let at = (next() % data.len() as u64) as usize;
                        data[at] = next() as u8;
                    }
                }
                // Sometimes a prefix only is captured.
                let seen = if next() % 5 == 0 { (next() % (data.len() as u64 + 1)) as usize } else { data.len() };
                if p.from_client {
                    d.client_gap(&data[..seen], data.len() as u64);
                } else {
                    d.server_gap(&data[..seen], data.len() as u64);
                }
            }
            d.close(true);
            assert_eq!(d.started(), d.exchanges().len());
        }
    }
}
