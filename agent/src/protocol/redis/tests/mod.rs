//! Tests: unit tests by topic, and the recorded conversations replayed.

mod framing;
mod recorded;
mod robustness;
mod state;
mod text;

use super::RedisSession;
use super::detect::looks_like_command;
use super::table::COMMANDS;
use crate::protocol::db::{DbEvent, DbExchange, DbFailure, DbSession, MAX_IN_FLIGHT, MAX_QUERY_TEXT};
use crate::protocol::http1::{Chunk, Ts};

/// Drives a session as the agent does and checks the event rules on the way.
pub(super) struct Driver {
    pub session: RedisSession,
    pub events: Vec<DbEvent>,
    clock: u64,
}

impl Driver {
    pub fn new() -> Driver {
        Driver::with(RedisSession::new(false))
    }

    pub fn mid_stream() -> Driver {
        Driver::with(RedisSession::new(true))
    }

    fn with(session: RedisSession) -> Driver {
        Driver { session, events: Vec::new(), clock: 0 }
    }

    fn chunk<'a>(&mut self, data: &'a [u8], size: u64) -> Chunk<'a> {
        self.clock += 10;
        Chunk { data, size, enter_ns: self.clock, exit_ns: self.clock + 5 }
    }

    pub fn client(&mut self, data: &[u8]) -> &mut Driver {
        self.client_gap(data, data.len() as u64)
    }

    pub fn server(&mut self, data: &[u8]) -> &mut Driver {
        self.server_gap(data, data.len() as u64)
    }

    /// A client syscall that moved `size` bytes of which `data` was captured.
    pub fn client_gap(&mut self, data: &[u8], size: u64) -> &mut Driver {
        let chunk = self.chunk(data, size);
        let events = self.session.on_client_bytes(&chunk);
        self.events.extend(events);
        self
    }

    pub fn server_gap(&mut self, data: &[u8], size: u64) -> &mut Driver {
        let chunk = self.chunk(data, size);
        let events = self.session.on_server_bytes(&chunk);
        self.events.extend(events);
        self
    }

    pub fn close(&mut self, reset: bool) -> &mut Driver {
        self.clock += 10;
        let events = self.session.on_close(self.clock, reset);
        self.events.extend(events);
        self
    }

    pub fn exchanges(&self) -> Vec<&DbExchange> {
        check_events(&self.events);
        self.events
            .iter()
            .filter_map(|e| match e {
                DbEvent::Exchange(x) => Some(x),
                DbEvent::Started { .. } => None,
            })
            .collect()
    }

    pub fn started(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, DbEvent::Started { .. })).count()
    }

    pub fn ops(&self) -> Vec<String> {
        self.exchanges().iter().map(|x| x.operation.clone().unwrap_or_default()).collect()
    }

    pub fn texts(&self) -> Vec<String> {
        self.exchanges().iter().map(|x| x.query_text.clone().unwrap_or_default()).collect()
    }
}

/// Started seqs count up from 0; each exchange follows its Started, once,
/// in seq order.
pub(super) fn check_events(events: &[DbEvent]) {
    let mut started = 0u64;
    let mut done = 0u64;
    for e in events {
        match e {
            DbEvent::Started { seq, .. } => {
                assert_eq!(*seq, started, "Started out of order in {events:#?}");
                started += 1;
            }
            DbEvent::Exchange(x) => {
                assert_eq!(x.seq, done, "Exchange out of order");
                assert!(x.seq < started, "Exchange {} before its Started", x.seq);
                done += 1;
            }
        }
    }
}

/// A command as RESP.
pub(super) fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}
