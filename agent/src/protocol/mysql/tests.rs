//! Unit tests. This module holds the wire builders and the driver; the
//! tests are in `conversations` (synthetic), `recorded` (real server) and
//! `robustness` (gaps, damage, garbage).

mod conversations;
mod recorded;
mod robustness;

use super::*;
use crate::protocol::db::{DbEvent, DbExchange, DbFailure, DbSession};
use crate::protocol::http1::{Chunk, Ts};

// ---- wire builders ----

pub(super) fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

pub(super) fn ok(seq: u8, affected: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0, affected, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    pkt(seq, &p)
}

pub(super) fn err(seq: u8, code: u16, msg: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#42S02");
    p.extend_from_slice(msg.as_bytes());
    pkt(seq, &p)
}

pub(super) fn eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    pkt(seq, &p)
}

pub(super) fn column_def(seq: u8) -> Vec<u8> {
    pkt(seq, b"\x03def\x04shop\x01t\x01t\x01c\x01c\x0c!\x00\x96\x00\x00\x00\xfd\x00\x00\x00\x00\x00")
}

pub(super) fn row(seq: u8, value: &str) -> Vec<u8> {
    let mut p = vec![value.len() as u8];
    p.extend_from_slice(value.as_bytes());
    pkt(seq, &p)
}

/// A classic (EOF-terminated) one-column result set, from sequence id 1.
pub(super) fn result_set(values: &[&str], status: u16) -> Vec<u8> {
    let mut out = pkt(1, &[1]);
    out.extend(column_def(2));
    out.extend(eof(3, 0x0002));
    let mut seq = 4u8;
    for v in values {
        out.extend(row(seq, v));
        seq = seq.wrapping_add(1);
    }
    out.extend(eof(seq, status));
    out
}

pub(super) fn query(sql: &str) -> Vec<u8> {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    pkt(0, &p)
}

pub(super) fn greeting() -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"8.0.36\0");
    p.extend_from_slice(&[1, 0, 0, 0]);
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&[0xff, 0xf7, 0x21, 0x02, 0x00, 0xff, 0xdf, 21]);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0caching_sha2_password\0");
    pkt(0, &p)
}

pub(super) const BASE_CAPS: u32 = 0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0002_0000 | 0x0001_0000;

pub(super) fn handshake_response(caps: u32, user: &str, auth: &[u8], db: Option<&str>) -> Vec<u8> {
    let caps = caps | if db.is_some() { 0x8 } else { 0 };
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(auth.len() as u8);
    p.extend_from_slice(auth);
    if let Some(db) = db {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(b"caching_sha2_password\0");
    pkt(1, &p)
}

// ---- driver ----

/// One chunk to feed: direction, captured bytes, bytes the syscall moved.
#[derive(Clone)]
pub(super) struct Piece {
    pub from_client: bool,
    pub data: Vec<u8>,
    pub size: u64,
}

pub(super) fn c(data: Vec<u8>) -> Piece {
    let size = data.len() as u64;
    Piece { from_client: true, data, size }
}

pub(super) fn s(data: Vec<u8>) -> Piece {
    let size = data.len() as u64;
    Piece { from_client: false, data, size }
}

/// Feeds pieces (timestamp `10 * i` for piece `i`), then closes; checks
/// the event rules and returns every event.
pub(super) fn run(session: &mut MysqlSession, pieces: &[Piece], close: bool) -> Vec<DbEvent> {
    let mut events = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let t = 10 * i as u64;
        events.extend(feed(session, p.from_client, &p.data, p.size, t));
    }
    if close {
        events.extend(session.on_close(1_000_000, false));
    }
    check_events(&events, close);
    events
}

/// Feeds a wholly captured chunk.
pub(super) fn send(session: &mut MysqlSession, from_client: bool, data: &[u8], t: u64) -> Vec<DbEvent> {
    feed(session, from_client, data, data.len() as u64, t)
}

pub(super) fn feed(session: &mut MysqlSession, from_client: bool, data: &[u8], size: u64, t: u64) -> Vec<DbEvent> {
    let chunk = Chunk { data, size, enter_ns: t, exit_ns: t + 1 };
    if from_client { session.on_client_bytes(&chunk) } else { session.on_server_bytes(&chunk) }
}

/// Started and Exchange each in seq order, one Exchange per Started, after it.
pub(super) fn check_events(events: &[DbEvent], closed: bool) {
    let mut started = Vec::new();
    let mut done = Vec::new();
    for e in events {
        match e {
            DbEvent::Started { seq, .. } => {
                assert_eq!(*seq, started.len() as u64, "Started out of order: {events:?}");
                started.push(*seq);
            }
            DbEvent::Exchange(x) => {
                assert_eq!(x.seq, done.len() as u64, "Exchange out of order");
                assert!(started.contains(&x.seq), "Exchange {} before its Started", x.seq);
                done.push(x.seq);
            }
        }
    }
    if closed {
        assert_eq!(started.len(), done.len(), "an exchange is missing after close");
    }
}

pub(super) fn exchanges(events: &[DbEvent]) -> Vec<DbExchange> {
    events
        .iter()
        .filter_map(|e| match e {
            DbEvent::Exchange(x) => Some(x.clone()),
            DbEvent::Started { .. } => None,
        })
        .collect()
}

pub(super) fn login() -> Vec<Piece> {
    vec![
        s(greeting()),
        c(handshake_response(BASE_CAPS, "app", b"0123456789abcdefghij", Some("shop"))),
        s(pkt(2, b"\x01\x03")),
        s(ok(3, 0, 2)),
    ]
}

pub(super) fn ts(t: u64) -> Ts {
    Ts { enter_ns: t, exit_ns: t + 1 }
}
