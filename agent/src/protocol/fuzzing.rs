//! Entry points shared by the cargo-fuzz targets (`agent/fuzz`) and the
//! regression test that replays every crash ever found
//! (`tests/fuzz_regressions/`). Each drives a parser the way the agent does:
//! arbitrary bytes, arbitrary syscall boundaries, gaps, both directions
//! (and, for `go_pclntab`, arbitrary executables).

use super::{
    db::DbSession,
    http1::{Chunk, Http1Session},
    http2::Http2Session,
    mysql::MysqlSession,
    postgres::PostgresSession,
    redis::RedisSession,
};

/// Cuts `data` into chunks whose sizes, directions and gaps come from the
/// input itself, so the fuzzer explores boundaries as well as content.
fn chunks(data: &[u8]) -> impl Iterator<Item = (bool, Chunk<'_>)> {
    let mut rest = data;
    let mut ts = 0u64;
    std::iter::from_fn(move || {
        let (&control, tail) = rest.split_first()?;
        let len = (usize::from(control & 0x3f) * 7 + 1).min(tail.len());
        let (piece, tail) = tail.split_at(len);
        rest = tail;
        ts += 10;
        let from_client = control & 0x80 == 0;
        // One chunk in 16 claims more bytes than were captured (a gap).
        let size = if control & 0x40 != 0 && len % 4 == 0 { len as u64 + u64::from(control) * 31 } else { len as u64 };
        Some((from_client, Chunk { data: piece, size, enter_ns: ts, exit_ns: ts + 5 }))
    })
}

pub fn http1(data: &[u8]) {
    let mut session = Http1Session::new();
    for (from_client, chunk) in chunks(data) {
        if from_client {
            session.on_request_bytes(&chunk);
        } else {
            session.on_response_bytes(&chunk);
        }
    }
    session.on_close(u64::MAX, data.first().is_some_and(|b| b & 1 == 1));
}

pub fn http2(data: &[u8]) {
    let mut session = Http2Session::new(mid_stream(data));
    for (from_client, chunk) in chunks(data) {
        if from_client {
            session.on_client_bytes(&chunk);
        } else {
            session.on_server_bytes(&chunk);
        }
    }
    session.on_close(u64::MAX, false);
}

fn db(mut session: impl DbSession, data: &[u8]) {
    for (from_client, chunk) in chunks(data) {
        if from_client {
            session.on_client_bytes(&chunk);
        } else {
            session.on_server_bytes(&chunk);
        }
    }
    session.on_close(u64::MAX, data.first().is_some_and(|b| b & 1 == 1));
}

/// The first byte picks a mid-stream start.
fn mid_stream(data: &[u8]) -> bool {
    data.first().is_some_and(|b| b & 2 == 2)
}

pub fn postgres(data: &[u8]) {
    db(PostgresSession::new(mid_stream(data)), data);
}

pub fn redis(data: &[u8]) {
    db(RedisSession::new(mid_stream(data)), data);
}

pub fn mysql(data: &[u8]) {
    db(MysqlSession::new(mid_stream(data)), data);
}

pub fn decode(data: &[u8]) {
    let _ = crate::capture::decode::decode(data);
}

/// A Go executable's pclntab and code, as `capture::gobinary` reads them
/// from any executable a traced process runs: a tenant's file, read by
/// root. An odd first byte puts a valid magic in front, so the fuzzer gets
/// past the header checks at once.
pub fn go_pclntab(data: &[u8]) {
    let mut table = Vec::with_capacity(data.len() + 8);
    if data.first().is_some_and(|b| b & 1 == 1) {
        table.extend_from_slice(&[0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8]);
    }
    table.extend_from_slice(data);
    crate::capture::gobinary::parse_untrusted(&table);
}
