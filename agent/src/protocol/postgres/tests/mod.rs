//! Test helpers: wire-format builders for both sides, a driver that feeds a
//! session with timestamps, and checks of the event-order contract.

use super::PostgresSession;
use crate::protocol::db::{DbEvent, DbExchange, DbSession};
use crate::protocol::http1::{Chunk, Ts};

mod detection;
mod pairing;
mod recorded;
mod robustness;

/// A typed message.
pub(super) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

pub(super) fn startup(user: &str, database: Option<&str>) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    cstr(&mut body, "user");
    cstr(&mut body, user);
    if let Some(db) = database {
        cstr(&mut body, "database");
        cstr(&mut body, db);
    }
    body.push(0);
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

pub(super) fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, sql);
    msg(b'Q', &body)
}

pub(super) fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, sql);
    body.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &body)
}

pub(super) fn bind(portal: &str, stmt: &str, params: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    cstr(&mut body, stmt);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        body.extend_from_slice(&(p.len() as i32).to_be_bytes());
        body.extend_from_slice(p);
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    msg(b'B', &body)
}

pub(super) fn describe_portal(portal: &str) -> Vec<u8> {
    let mut body = vec![b'P'];
    cstr(&mut body, portal);
    msg(b'D', &body)
}

pub(super) fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    cstr(&mut body, name);
    msg(b'C', &body)
}

pub(super) fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    body.extend_from_slice(&max_rows.to_be_bytes());
    msg(b'E', &body)
}

pub(super) fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

pub(super) fn password(pw: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, pw);
    msg(b'p', &body)
}

pub(super) fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

pub(super) fn complete(tag: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, tag);
    msg(b'C', &body)
}

pub(super) fn row_description(cols: &[&str]) -> Vec<u8> {
    let mut body = (cols.len() as i16).to_be_bytes().to_vec();
    for c in cols {
        cstr(&mut body, c);
        body.extend_from_slice(&[0; 18]);
    }
    msg(b'T', &body)
}

pub(super) fn data_row(cols: &[&[u8]]) -> Vec<u8> {
    let mut body = (cols.len() as i16).to_be_bytes().to_vec();
    for c in cols {
        body.extend_from_slice(&(c.len() as i32).to_be_bytes());
        body.extend_from_slice(c);
    }
    msg(b'D', &body)
}

pub(super) fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (f, v) in [(b'S', "ERROR"), (b'V', "ERROR"), (b'C', code), (b'M', message)] {
        body.push(f);
        cstr(&mut body, v);
    }
    body.push(0);
    msg(b'E', &body)
}

pub(super) fn notice(message: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    cstr(&mut body, "NOTICE");
    body.push(b'M');
    cstr(&mut body, message);
    body.push(0);
    msg(b'N', &body)
}

pub(super) fn parameter_status(k: &str, v: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, k);
    cstr(&mut body, v);
    msg(b'S', &body)
}

pub(super) fn notification(channel: &str, payload: &str) -> Vec<u8> {
    let mut body = 42i32.to_be_bytes().to_vec();
    cstr(&mut body, channel);
    cstr(&mut body, payload);
    msg(b'A', &body)
}

/// AuthenticationOk, a ParameterStatus, BackendKeyData, ReadyForQuery.
pub(super) fn server_hello() -> Vec<u8> {
    [
        msg(b'R', &0i32.to_be_bytes()),
        parameter_status("server_version", "15.18"),
        msg(b'K', &[0, 0, 0, 7, 1, 2, 3, 4]),
        ready(),
    ]
    .concat()
}

pub(super) fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Feeds a session and records its events; chunk `n` (from 0) has
/// timestamps `enter = 10 n`, `exit = 10 n + 1`.
pub(super) struct Driver {
    pub session: PostgresSession,
    pub events: Vec<DbEvent>,
    chunks: u64,
}

impl Driver {
    pub fn new(mid_stream: bool) -> Self {
        Self { session: PostgresSession::new(mid_stream), events: Vec::new(), chunks: 0 }
    }

    /// A session past the startup of user `app` on database `shop`.
    pub fn connected() -> Self {
        let mut d = Self::new(false);
        d.client(&startup("app", Some("shop")));
        d.server(&server_hello());
        d
    }

    /// Timestamps of chunk `n`.
    pub fn ts(n: u64) -> Ts {
        Ts { enter_ns: n * 10, exit_ns: n * 10 + 1 }
    }

    fn feed(&mut self, from_client: bool, data: &[u8], size: u64) -> u64 {
        let n = self.chunks;
        self.chunks += 1;
        let t = Self::ts(n);
        let chunk = Chunk { data, size, enter_ns: t.enter_ns, exit_ns: t.exit_ns };
        let ev = if from_client { self.session.on_client_bytes(&chunk) } else { self.session.on_server_bytes(&chunk) };
        self.events.extend(ev);
        n
    }

    /// Feeds client bytes; returns the chunk number.
    pub fn client(&mut self, data: &[u8]) -> u64 {
        self.feed(true, data, data.len() as u64)
    }

    pub fn server(&mut self, data: &[u8]) -> u64 {
        self.feed(false, data, data.len() as u64)
    }

    /// Client bytes of which only the first `captured` were copied.
    pub fn client_cut(&mut self, data: &[u8], captured: usize) -> u64 {
        self.feed(true, &data[..captured.min(data.len())], data.len() as u64)
    }

    pub fn server_cut(&mut self, data: &[u8], captured: usize) -> u64 {
        self.feed(false, &data[..captured.min(data.len())], data.len() as u64)
    }

    pub fn close(&mut self, reset: bool) {
        let n = self.chunks;
        self.chunks += 1;
        let ev = self.session.on_close(n * 10, reset);
        self.events.extend(ev);
    }

    pub fn exchanges(&self) -> Vec<DbExchange> {
        check_order(&self.events);
        self.events
            .iter()
            .filter_map(|e| match e {
                DbEvent::Exchange(x) => Some(x.clone()),
                DbEvent::Started { .. } => None,
            })
            .collect()
    }

    pub fn started(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, DbEvent::Started { .. })).count()
    }
}

/// The contract: `Started` seqs count up from 0; exchanges come in seq
/// order, each after its `Started`, at most once, with the same `first`.
pub(super) fn check_order(events: &[DbEvent]) {
    let mut started = Vec::new();
    let mut next_exchange = 0u64;
    for e in events {
        match e {
            DbEvent::Started { seq, first } => {
                assert_eq!(*seq, started.len() as u64, "Started out of order: {events:#?}");
                started.push(*first);
            }
            DbEvent::Exchange(x) => {
                assert_eq!(x.seq, next_exchange, "Exchange out of order");
                assert!((x.seq as usize) < started.len(), "Exchange before its Started");
                assert_eq!(started[x.seq as usize], x.request_first);
                next_exchange += 1;
            }
        }
    }
}

/// Exchanges with timestamps cleared, to compare replays chunked differently.
pub(super) fn without_times(xs: &[DbExchange]) -> Vec<DbExchange> {
    xs.iter()
        .map(|x| DbExchange {
            request_first: Ts::default(),
            request_last: Ts::default(),
            response_first: x.response_first.map(|_| Ts::default()),
            response_last: x.response_last.map(|_| Ts::default()),
            closed_ns: x.closed_ns.map(|_| 0),
            ..x.clone()
        })
        .collect()
}
